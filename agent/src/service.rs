//! service: the agent as a Windows service.
//!
//! `agent service install` registers `examlink-agent` (automatic start at boot, LocalSystem,
//! restart on failure: after 10 s, 30 s, then every 60 s, the count reset after a day);
//! `uninstall`, `start` and `stop` do what they say. The MSI registers the same service with
//! the same command line (`packaging/windows/agent.wxs`). The service control manager runs
//! `agent.exe service run --config <file>`; a stop or a system shutdown is a graceful stop: the
//! shutdown future of [`crate::run`] resolves, the batch in hand finishes and the outbox is
//! flushed, as on Ctrl-C in a console. At each start the service (re)applies its recovery
//! settings, because an MSI's service table cannot carry them, and tightens the secrets
//! folder's permissions (SYSTEM and Administrators only).
//!
//! Without a console the log goes to `log.file`, or to `logs\agent.log` beside the
//! configuration file, rotated by size ([`crate::logfile`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The service's name (`sc query examlink-agent`).
pub const SERVICE_NAME: &str = "examlink-agent";
/// Its display name (services.msc).
pub const DISPLAY_NAME: &str = "examlink agent";
/// Its description.
pub const DESCRIPTION: &str =
    "Reads exam-device exports, recognizes their values and delivers them to the examlink hub.";

/// The command line the service control manager starts the agent with (after the program).
pub fn launch_arguments(config: &Path) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ]
}

/// Where a service without `log.file` logs: `logs/agent.log` beside its configuration file.
pub fn default_log_file(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("logs")
        .join("agent.log")
}

/// The folder whose permissions the service restricts: `secrets` beside the configuration file
/// (the broker password, the client key).
pub fn secrets_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("secrets")
}

/// `icacls` arguments that leave `dir` readable by SYSTEM and Administrators only (by SID, so
/// they hold on every Windows language): inheritance from ProgramData (where Users may read)
/// removed, full control for the two, inherited by everything inside.
pub fn secrets_acl_args(dir: &Path) -> Vec<OsString> {
    vec![
        dir.as_os_str().to_owned(),
        "/inheritance:r".into(),
        "/grant:r".into(),
        "*S-1-5-18:(OI)(CI)F".into(),
        "/grant:r".into(),
        "*S-1-5-32-544:(OI)(CI)F".into(),
    ]
}

/// The default configuration shipped beside `agent.exe` (MSI and zip).
pub const DEFAULT_CONFIG_NAME: &str = "agent.default.toml";

/// Makes sure `config` exists: when it does not, copies [`DEFAULT_CONFIG_NAME`] from
/// `program_dir` there (creating its folder). True when it copied. An existing file is never
/// touched, so upgrades and rollbacks keep the operator's configuration.
pub fn ensure_config(config: &Path, program_dir: &Path) -> std::io::Result<bool> {
    if config.exists() {
        return Ok(false);
    }
    let default = program_dir.join(DEFAULT_CONFIG_NAME);
    if !default.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} does not exist and there is no {} to copy",
                config.display(),
                default.display()
            ),
        ));
    }
    if let Some(dir) = config.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Copy to a temporary name first: a crash mid-copy leaves no half configuration.
    let tmp = config.with_extension("toml.new");
    std::fs::copy(&default, &tmp)?;
    std::fs::rename(&tmp, config)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_copied_once_and_never_over_an_edited_one() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("Program Files/examlink");
        std::fs::create_dir_all(&program).unwrap();
        std::fs::write(
            program.join(DEFAULT_CONFIG_NAME),
            "device_id = \"device-01\"\n",
        )
        .unwrap();
        let config = dir.path().join("ProgramData/examlink/agent.toml");
        assert!(ensure_config(&config, &program).unwrap());
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "device_id = \"device-01\"\n"
        );
        std::fs::write(&config, "device_id = \"biometer-3\"\n").unwrap();
        std::fs::write(program.join(DEFAULT_CONFIG_NAME), "device_id = \"new\"\n").unwrap();
        assert!(!ensure_config(&config, &program).unwrap());
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "device_id = \"biometer-3\"\n"
        );
    }

    #[test]
    fn a_missing_default_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure_config(&dir.path().join("agent.toml"), dir.path()).unwrap_err();
        assert!(err.to_string().contains(DEFAULT_CONFIG_NAME), "{err}");
    }

    #[test]
    fn the_service_command_line_names_the_configuration() {
        let args = launch_arguments(Path::new(r"C:\ProgramData\examlink\agent.toml"));
        assert_eq!(args[..3], ["service", "run", "--config"]);
        assert_eq!(
            default_log_file(Path::new("/pd/examlink/agent.toml")),
            Path::new("/pd/examlink/logs/agent.log")
        );
        let acl = secrets_acl_args(Path::new("/pd/examlink/secrets"));
        assert!(acl.iter().any(|a| a == "/inheritance:r"));
    }
}

#[cfg(windows)]
pub use self::windows::{install, run_dispatcher, start, stop, uninstall};

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::Duration;

    use anyhow::Context;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    use super::{DESCRIPTION, DISPLAY_NAME, SERVICE_NAME};
    use crate::logfile::RotatingFile;

    static CONFIG: OnceLock<PathBuf> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    /// Hands this process to the service control manager (`agent service run`); returns when
    /// the service stopped. Fails at once when not started by the service control manager.
    pub fn run_dispatcher(config: &Path) -> anyhow::Result<()> {
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
        CONFIG.get_or_init(|| config);
        service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
            "not started by the service control manager (use `agent service start`, or `agent run` in a console)",
        )
    }

    fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
        ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT | access)
            .context("connecting to the service control manager (run as Administrator)")
    }

    /// The installed examlink service, opened for `access`.
    fn open(access: ServiceAccess) -> anyhow::Result<windows_service::service::Service> {
        manager(ServiceManagerAccess::empty())?
            .open_service(SERVICE_NAME, access)
            .with_context(|| format!("opening the service {SERVICE_NAME}"))
    }

    /// `agent service install`: registers the service for `config` (made absolute).
    pub fn install(config: &Path) -> anyhow::Result<()> {
        let config = std::path::absolute(config).context("resolving the configuration path")?;
        let exe = std::env::current_exe().context("locating agent.exe")?;
        if super::ensure_config(&config, exe.parent().unwrap_or(Path::new(".")))? {
            println!(
                "{}: default configuration installed; edit it, then `agent service start`",
                config.display()
            );
        }
        let info = ServiceInfo {
            name: SERVICE_NAME.into(),
            display_name: DISPLAY_NAME.into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: exe,
            launch_arguments: super::launch_arguments(&config),
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let service = manager(ServiceManagerAccess::CREATE_SERVICE)?
            .create_service(
                &info,
                ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
            )
            .with_context(|| format!("creating the service {SERVICE_NAME}"))?;
        service
            .set_description(DESCRIPTION)
            .context("setting the description")?;
        configure_recovery(&service)?;
        secure_secrets(&config);
        Ok(())
    }

    fn configure_recovery(service: &windows_service::service::Service) -> anyhow::Result<()> {
        let restart = |secs| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: Duration::from_secs(secs),
        };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(10), restart(30), restart(60)]),
            })
            .context("setting the restart-on-failure actions")?;
        // An exit with an error code (not only a crash) restarts too.
        service
            .set_failure_actions_on_non_crash_failures(true)
            .context("setting the failure-actions flag")?;
        Ok(())
    }

    /// Restricts the secrets folder (best effort: a warning when `icacls` fails).
    fn secure_secrets(config: &Path) {
        let dir = super::secrets_dir(config);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot create the secrets folder.");
            return;
        }
        match std::process::Command::new("icacls")
            .args(super::secrets_acl_args(&dir))
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                dir = %dir.display(),
                output = %String::from_utf8_lossy(&o.stdout).trim(),
                "icacls could not restrict the secrets folder."
            ),
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "Cannot run icacls."),
        }
    }

    /// `agent service uninstall`: stops the service if it runs, then deletes it.
    pub fn uninstall() -> anyhow::Result<()> {
        let service =
            open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
        stop_gracefully(&service)?;
        service.delete().context("deleting the service")?;
        Ok(())
    }

    /// `agent service start`.
    pub fn start() -> anyhow::Result<()> {
        let service = open(ServiceAccess::START | ServiceAccess::QUERY_STATUS)?;
        service
            .start::<OsString>(&[])
            .context("starting the service")?;
        wait_for(&service, ServiceState::Running, Duration::from_secs(30))
    }

    /// `agent service stop`: a graceful stop; waits until the service reports stopped. A service
    /// still starting is let finish starting first (it cannot take a stop before); one already
    /// stopped is fine.
    pub fn stop() -> anyhow::Result<()> {
        let service = open(ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)?;
        stop_gracefully(&service)
    }

    fn stop_gracefully(service: &windows_service::service::Service) -> anyhow::Result<()> {
        let limit = Duration::from_secs(30);
        match service.query_status()?.current_state {
            ServiceState::Stopped => return Ok(()),
            ServiceState::StopPending => return wait_for(service, ServiceState::Stopped, limit),
            ServiceState::StartPending => wait_for(service, ServiceState::Running, limit)?,
            _ => {}
        }
        service.stop().context("stopping the service")?;
        wait_for(service, ServiceState::Stopped, limit)
    }

    fn wait_for(
        service: &windows_service::service::Service,
        state: ServiceState,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = service.query_status()?.current_state;
            if now == state {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the service is {now:?} after {timeout:?}, not {state:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn status(state: ServiceState, exit: ServiceExitCode, wait: Duration) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: exit,
            checkpoint: 0,
            wait_hint: wait,
            process_id: None,
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        let config = CONFIG
            .get()
            .cloned()
            .unwrap_or_else(crate::paths::default_config_file);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                let _sent = stop_tx.send(true);
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(SERVICE_NAME, handler) else {
            return;
        };
        let report = |state, exit, wait| {
            let _reported = handle.set_service_status(status(state, exit, wait));
        };
        report(
            ServiceState::StartPending,
            ServiceExitCode::Win32(0),
            Duration::from_secs(30),
        );
        let code = run_service(&config, stop_rx, &|| {
            report(
                ServiceState::Running,
                ServiceExitCode::Win32(0),
                Duration::ZERO,
            )
        });
        report(
            ServiceState::Stopped,
            if code == 0 {
                ServiceExitCode::Win32(0)
            } else {
                ServiceExitCode::ServiceSpecific(code)
            },
            Duration::ZERO,
        );
    }

    /// Loads the configuration, logs to a file, reports running, runs the agent until a stop.
    /// The exit code: 0 after a stop, 2 for an invalid configuration, 1 when the agent failed
    /// (a non-zero code makes the service control manager restart it).
    fn run_service(
        config: &Path,
        stop_rx: tokio::sync::watch::Receiver<bool>,
        running: &dyn Fn(),
    ) -> u32 {
        let program_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
            .unwrap_or_default();
        let copied = super::ensure_config(config, &program_dir);
        let settings = crate::config::load_settings(config);
        let log = settings.as_ref().map(|s| s.log.clone()).unwrap_or_default();
        let log_file = if log.file.as_os_str().is_empty() {
            super::default_log_file(config)
        } else {
            log.file.clone()
        };
        if let Ok(file) = RotatingFile::open(&log_file, log.max_bytes, log.keep) {
            crate::logfile::install(crate::logfile::LogFormat::Text, Some(file));
        }
        let settings = match settings {
            Ok(s) => s,
            Err(errors) => {
                for e in &errors {
                    tracing::error!(config = %config.display(), error = %e, "Invalid configuration.");
                }
                return 2;
            }
        };
        match open(ServiceAccess::CHANGE_CONFIG).and_then(|s| configure_recovery(&s)) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot set the service's recovery actions.")
            }
        }
        if let Ok(true) = copied {
            tracing::info!(config = %config.display(), "Default configuration installed.");
        }
        secure_secrets(config);
        tracing::info!(config = %config.display(), log = %log_file.display(), "Service running.");
        running();
        let result = crate::run_blocking(settings, async move {
            let mut rx = stop_rx;
            let _stopped = rx.wait_for(|s| *s).await;
            tracing::info!("Service stop requested: finishing the batch in hand.");
        });
        match result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "Agent failed.");
                1
            }
        }
    }
}
