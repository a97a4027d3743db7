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

/// The log filter without `RUST_LOG`: the hub's own events at INFO, its dependencies' (the
/// embedded broker logs every subscription at INFO) at WARN.
const DEFAULT_LOG: &str = "warn,hub=info,record=info";

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
    /// Manage people's accounts (HTTP API and pages).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// List, show or replay the messages the hub refused (kept whole in `rejects`).
    Rejects {
        #[command(subcommand)]
        action: RejectsAction,
    },
    /// Print the audit trail (oldest first), one entry per line.
    Audit {
        /// Only this actor (a user name, `device:<id>`, `cli:<user>`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (records.read, device.add, user.revoke, login, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only entries at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// The newest this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RejectsAction {
    /// List kept rejects, oldest first (not those a replay stored, unless --all).
    List {
        #[command(flatten)]
        filter: RejectsFilter,
        /// Also those already replayed.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one reject, with its payload.
    Show {
        /// Reject id (from `list`).
        id: i64,
    },
    /// Check the matching rejects again and store those that pass now (idempotent: a record
    /// is stored once however often it is replayed).
    Replay {
        #[command(flatten)]
        filter: RejectsFilter,
    },
}

#[derive(clap::Args)]
struct RejectsFilter {
    /// Only this reason code (value, rule, record_id, ...).
    #[arg(long)]
    code: Option<String>,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only this reject id.
    #[arg(long)]
    id: Option<i64>,
    /// At most this many.
    #[arg(long, default_value_t = 100_000)]
    limit: i64,
}

impl RejectsFilter {
    fn into_filter(self, include_replayed: bool) -> hub::rejects::Filter {
        hub::rejects::Filter {
            code: self.code,
            device: self.device,
            id: self.id,
            include_replayed,
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
enum UserAction {
    /// Create an account and print its password (once), or set it from a file.
    Add {
        /// User name (a-z, 0-9, '.', '-', '_').
        name: String,
        /// reader (queries records), reviewer (also resolves reviews) or admin (also manages
        /// devices and users).
        #[arg(long)]
        role: String,
        /// Read the password from this file's first line instead of generating one.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Give a user a new password (printed once, or from a file); their sessions end.
    Rotate {
        /// User name.
        name: String,
        /// Read the password from this file's first line instead of generating one.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Revoke a user; their sessions end at once.
    Revoke {
        /// User name.
        name: String,
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
        /// Take the password from this file's first line (at least 16 characters: the one an
        /// agent was installed with) instead of generating one.
        #[arg(long)]
        password_file: Option<PathBuf>,
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
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
            Command::Run => hub::run(config, record::signal::shutdown())
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
            Command::User { action } => user(&config, action).await,
            Command::Rejects { action } => rejects(&config, action).await,
            Command::Audit {
                actor,
                action,
                since,
                limit,
                json,
            } => {
                let client = admin_client(&config).await?;
                let filter = hub::audit::Filter {
                    actor,
                    action,
                    since,
                    limit,
                };
                for e in hub::audit::list(&client, &filter)
                    .await
                    .context("reading the audit trail")?
                {
                    if json {
                        println!("{}", serde_json::to_string(&e)?);
                    } else {
                        println!(
                            "{}  {:<24} {:<16} {}",
                            e.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                            e.actor,
                            e.action,
                            e.detail
                        );
                    }
                }
                Ok(())
            }
            Command::PrintConfig | Command::CheckConfig { .. } => Ok(()),
        }
    })
}

/// A migrated connection for the admin commands.
async fn admin_client(config: &HubConfig) -> anyhow::Result<tokio_postgres::Client> {
    let target = hub::load::PgTarget::new(&config.load)?;
    let mut client = target.connect().await.context("connecting to PostgreSQL")?;
    hub::load::migrate::migrate(&mut client, target.schema())
        .await
        .context("migrating")?;
    Ok(client)
}

async fn device(config: &HubConfig, action: DeviceAction) -> anyhow::Result<()> {
    let client = admin_client(config).await?;
    let actor = hub::audit::cli_actor();
    let parse = |id: &str| DeviceId::new(id).context("device id");
    match action {
        DeviceAction::Add {
            id,
            device_type,
            password_file,
        } => {
            let id = parse(&id)?;
            let given = password_from(password_file.as_ref())?;
            let from_file = given.is_some();
            let pw = hub::auth::add_device_with(&client, &actor, &id, &device_type, given).await?;
            if from_file {
                println!("device {id} added with the password from the file");
            } else {
                println!("device {id} added; password (shown once): {}", pw.expose());
            }
        }
        DeviceAction::Rotate { id } => {
            let id = parse(&id)?;
            let pw = hub::auth::rotate_device(&client, &actor, &id).await?;
            println!(
                "device {id} rotated; new password (shown once): {}",
                pw.expose()
            );
        }
        DeviceAction::Revoke { id } => {
            let id = parse(&id)?;
            hub::auth::revoke_device(&client, &actor, &id).await?;
            println!("device {id} revoked");
        }
    }
    Ok(())
}

async fn rejects(config: &HubConfig, action: RejectsAction) -> anyhow::Result<()> {
    let mut client = admin_client(config).await?;
    let actor = hub::audit::cli_actor();
    match action {
        RejectsAction::List { filter, all, json } => {
            let rows = hub::rejects::list(&client, &actor, &filter.into_filter(all)).await?;
            for r in &rows {
                if json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    println!(
                        "{:>8}  {}  {:<16} {:<16} {:>7} B  {}: {}{}",
                        r.id,
                        r.received_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        r.device_id.as_deref().unwrap_or("?"),
                        r.code,
                        r.payload_size,
                        r.code,
                        r.reason,
                        r.replay_outcome
                            .as_deref()
                            .map(|o| format!("  [replay: {o}]"))
                            .unwrap_or_default()
                    );
                }
            }
            if !json {
                println!("{} reject(s)", rows.len());
            }
        }
        RejectsAction::Show { id } => {
            let Some((r, payload)) = hub::rejects::show(&client, &actor, id).await? else {
                anyhow::bail!("no reject with id {id}");
            };
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("{}", String::from_utf8_lossy(&payload));
        }
        RejectsAction::Replay { filter } => {
            let target = hub::load::PgTarget::new(&config.load)?;
            let sources = hub::templates::read_folder(&config.templates_dir)?;
            let catalog = hub::templates::open_catalog(&client, &sources)
                .await
                .map(std::sync::Arc::new)
                .context("storing and loading the template versions")?;
            let validator =
                hub::validate::Validator::with_catalog(catalog, config.validate.clone());
            let summary = hub::rejects::replay(
                &mut client,
                &validator,
                &actor,
                &filter.into_filter(false),
                config.validate.reject_payload_cap_bytes,
            )
            .await
            .with_context(|| format!("replaying rejects in schema {}", target.schema()))?;
            for (outcome, n) in &summary.outcomes {
                println!("{outcome}: {n}");
            }
            println!(
                "replayed: {} stored, {} already stored",
                summary.count("stored"),
                summary.count("duplicate")
            );
        }
    }
    Ok(())
}

fn password_from(file: Option<&PathBuf>) -> anyhow::Result<Option<hub::config::Secret>> {
    let Some(path) = file else {
        return Ok(None);
    };
    let r = hub::config::SecretRef {
        password_file: Some(path.clone()),
        password_env: None,
    };
    r.resolve("--password-file")
        .with_context(|| format!("reading {}", path.display()))
}

async fn user(config: &HubConfig, action: UserAction) -> anyhow::Result<()> {
    let client = admin_client(config).await?;
    let actor = hub::audit::cli_actor();
    match action {
        UserAction::Add {
            name,
            role,
            password_file,
        } => {
            let role = hub::users::UserRole::parse(&role)?;
            let given = password_from(password_file.as_ref())?;
            let from_file = given.is_some();
            let pw = hub::users::add_user(&client, &actor, &name, role, given).await?;
            if from_file {
                println!(
                    "user {name} ({}) added with the password from the file",
                    role.as_str()
                );
            } else {
                println!(
                    "user {name} ({}) added; password (shown once): {}",
                    role.as_str(),
                    pw.expose()
                );
            }
        }
        UserAction::Rotate {
            name,
            password_file,
        } => {
            let given = password_from(password_file.as_ref())?;
            let from_file = given.is_some();
            let pw = hub::users::rotate_user(&client, &actor, &name, given).await?;
            if from_file {
                println!("user {name} rotated to the password from the file; their sessions ended");
            } else {
                println!(
                    "user {name} rotated; their sessions ended; new password (shown once): {}",
                    pw.expose()
                );
            }
        }
        UserAction::Revoke { name } => {
            hub::users::revoke_user(&client, &actor, &name).await?;
            println!("user {name} revoked; their sessions ended");
        }
    }
    Ok(())
}
