//! config: one TOML file (see `agent/agent.toml`, embedded as [`DEFAULT_CONFIG`] and printed by
//! `agent print-config`). Unknown keys are errors; a missing key takes its default.
//!
//! [`Config`] is the file as written; [`Config::validate`] turns it into the runtime
//! [`Settings`] (ids checked, relative paths resolved against the file's directory, secrets
//! read), reporting every problem with the key it concerns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use record::DeviceId;
use serde::{Deserialize, Serialize};

use crate::assemble::QuarantineConfig;
use crate::ingest::IngestConfig;
use crate::logfile::{LogConfig, MIN_LOG_BYTES};
use crate::outbox::{DeliveryConfig, OutboxConfig};
use crate::publish::{MqttSettings, PublishConfig};
use crate::telemetry::TelemetryConfig;

/// The default configuration file, with comments.
pub const DEFAULT_CONFIG: &str = include_str!("../agent.toml");

/// A configuration problem, naming the key (or file) concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {problem}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {problem}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML error, with line, column and key.
        problem: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key (`publish.broker_url`).
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl ConfigError {
    /// An invalid value at `key`.
    pub fn invalid(key: &str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

/// `[recognize]`: templates, model, how much CPU recognition may use, and quality sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecognizeConfig {
    /// Device templates directory.
    pub templates_dir: PathBuf,
    /// The recognition model.
    pub model_path: PathBuf,
    /// Exports recognized in parallel.
    pub workers: usize,
    /// Threads the model may use per recognition.
    pub model_threads: usize,
    /// Pixel cap checked on the image header, before decoding.
    pub max_pixels: u64,
    /// The layout-change canary: after this many exports in a row refused as
    /// `unknown_layout` (a firmware update, a new display scaling), the agent's status reports
    /// a layout error and `examlink_agent_layout_alarm` turns 1, until an export is read again.
    pub layout_alarm_after: u32,
    /// Quality sampling: the share (0 to 1) of fields read `ok` whose crop goes with the record
    /// to the hub's blind-check queue, where a reviewer types what it shows without seeing the
    /// read. Drawn by record id and field ([`crate::assemble::sample`]), so a re-read of the
    /// same export draws the same fields; 0 turns sampling off.
    pub quality_sample: f64,
}

impl Default for RecognizeConfig {
    fn default() -> Self {
        Self {
            templates_dir: PathBuf::from("templates"),
            model_path: PathBuf::from("models"),
            workers: 1,
            model_threads: 1,
            max_pixels: 40_000_000,
            layout_alarm_after: 3,
            quality_sample: crate::assemble::sample::DEFAULT_QUALITY_SAMPLE,
        }
    }
}

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This device's id.
    pub device_id: String,
    /// `auto` or one device type.
    pub device_type: String,
    /// Outbox database directory.
    pub data_dir: PathBuf,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[recognize]`.
    pub recognize: RecognizeConfig,
    /// `[quarantine]`.
    pub quarantine: QuarantineConfig,
    /// `[outbox]`.
    pub outbox: OutboxConfig,
    /// `[publish]`.
    pub publish: PublishConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[log]`.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_id: "device-01".into(),
            device_type: "auto".into(),
            data_dir: PathBuf::from("data"),
            ingest: IngestConfig::default(),
            recognize: RecognizeConfig::default(),
            quarantine: QuarantineConfig::default(),
            outbox: OutboxConfig::default(),
            publish: PublishConfig::default(),
            telemetry: TelemetryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This device.
    pub device: DeviceId,
    /// `None` for `auto`.
    pub device_type: Option<String>,
    /// Outbox database directory.
    pub data_dir: PathBuf,
    /// `[ingest]`, paths resolved.
    pub ingest: IngestConfig,
    /// `[recognize]`, paths resolved.
    pub recognize: RecognizeConfig,
    /// `[quarantine]`, path resolved.
    pub quarantine: QuarantineConfig,
    /// `[outbox]`.
    pub outbox: OutboxConfig,
    /// `[publish]`, secrets read.
    pub mqtt: MqttSettings,
    /// Metrics listener, if on.
    pub metrics_listen: Option<SocketAddr>,
    /// `[log]`, path resolved (empty: standard error).
    pub log: LogConfig,
}

impl Settings {
    /// The delivery protocol's tuning.
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            window: self.outbox.window,
            resend_after: std::time::Duration::from_secs(self.outbox.resend_after_secs),
            defer_initial: std::time::Duration::from_secs(self.outbox.defer_initial_secs),
            defer_max: std::time::Duration::from_secs(self.outbox.defer_max_secs),
        }
    }
}

impl Config {
    /// Parses a configuration text (`path` only names it in errors).
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            problem: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Checks every value; relative paths are resolved against `base` (the file's directory).
    /// Returns every problem found, not just the first.
    pub fn validate(&self, base: &Path) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let resolve = |p: &Path| resolve(base, p);

        let device = DeviceId::new(self.device_id.clone())
            .map_err(|e| errors.push(ConfigError::invalid("device_id", e.to_string())))
            .ok();
        let device_type = match self.device_type.as_str() {
            "auto" => None,
            t if record::catalog::fields(t).is_some() => Some(t.to_owned()),
            t => {
                let known: Vec<&str> = record::catalog::DEVICES.iter().map(|(d, _)| *d).collect();
                errors.push(ConfigError::invalid(
                    "device_type",
                    format!(
                        "unknown device type {t:?}: use \"auto\" or one of {}",
                        known.join(", ")
                    ),
                ));
                None
            }
        };

        let mut ingest = self.ingest.clone();
        ingest.export_dirs = ingest.export_dirs.iter().map(|p| resolve(p)).collect();
        if ingest.export_dirs.is_empty() {
            errors.push(ConfigError::invalid(
                "ingest.export_dirs",
                "list at least one folder",
            ));
        }
        if ingest.rescan_secs == 0 {
            errors.push(ConfigError::invalid("ingest.rescan_secs", "must be ≥ 1"));
        }
        if ingest.settle_ms > 3_600_000 {
            errors.push(ConfigError::invalid(
                "ingest.settle_ms",
                "must be ≤ 3600000 (one hour)",
            ));
        }
        if ingest.max_file_bytes == 0 {
            errors.push(ConfigError::invalid("ingest.max_file_bytes", "must be > 0"));
        }

        let mut recognize = self.recognize.clone();
        recognize.templates_dir = resolve(&recognize.templates_dir);
        recognize.model_path = resolve(&recognize.model_path);
        for (key, v) in [
            ("recognize.workers", recognize.workers),
            ("recognize.model_threads", recognize.model_threads),
        ] {
            if !(1..=64).contains(&v) {
                errors.push(ConfigError::invalid(key, "must be between 1 and 64"));
            }
        }
        if recognize.layout_alarm_after == 0 {
            errors.push(ConfigError::invalid(
                "recognize.layout_alarm_after",
                "must be >= 1",
            ));
        }
        let share = recognize.quality_sample;
        if !(0.0..=1.0).contains(&share) {
            errors.push(ConfigError::invalid(
                "recognize.quality_sample",
                format!(
                    "{share} is not a share: use 0.0 to 1.0 (0.005 = 0.5% of the fields read ok \
                     go to the blind check; 0 turns sampling off)"
                ),
            ));
        }
        if recognize.max_pixels == 0 {
            errors.push(ConfigError::invalid("recognize.max_pixels", "must be > 0"));
        }
        if !recognize.templates_dir.is_dir() {
            errors.push(ConfigError::invalid(
                "recognize.templates_dir",
                format!("{} is not a directory", recognize.templates_dir.display()),
            ));
        }
        if !recognize.model_path.exists() {
            errors.push(ConfigError::invalid(
                "recognize.model_path",
                format!("{} does not exist", recognize.model_path.display()),
            ));
        }

        let mut quarantine = self.quarantine.clone();
        quarantine.dir = resolve(&quarantine.dir);
        let data_dir = resolve(&self.data_dir);
        for export in &ingest.export_dirs {
            for (key, dir) in [("quarantine.dir", &quarantine.dir), ("data_dir", &data_dir)] {
                if crate::paths::overlaps(dir, export) {
                    errors.push(ConfigError::invalid(
                        key,
                        format!(
                            "{} overlaps the export folder {}: keep them apart",
                            dir.display(),
                            export.display()
                        ),
                    ));
                }
            }
        }

        let outbox = self.outbox.clone();
        if outbox.max_bytes < 1024 * 1024 {
            errors.push(ConfigError::invalid(
                "outbox.max_bytes",
                "must be ≥ 1048576 (1 MiB)",
            ));
        }
        if !(1..=65_535).contains(&outbox.window) {
            errors.push(ConfigError::invalid(
                "outbox.window",
                "must be between 1 and 65535",
            ));
        }
        if outbox.resend_after_secs == 0 {
            errors.push(ConfigError::invalid(
                "outbox.resend_after_secs",
                "must be ≥ 1",
            ));
        }
        if outbox.defer_initial_secs == 0 {
            errors.push(ConfigError::invalid(
                "outbox.defer_initial_secs",
                "must be ≥ 1",
            ));
        }
        if outbox.defer_max_secs < outbox.defer_initial_secs {
            errors.push(ConfigError::invalid(
                "outbox.defer_max_secs",
                format!(
                    "must be ≥ outbox.defer_initial_secs ({})",
                    outbox.defer_initial_secs
                ),
            ));
        }

        let mut publish = self.publish.clone();
        publish.password_file = publish.password_file.as_deref().map(resolve);
        publish.tls_ca_file = publish.tls_ca_file.as_deref().map(resolve);
        // With an invalid device id, still check the section (with a stand-in id).
        let stand_in = DeviceId::new("device").expect("a valid id");
        let mqtt = publish
            .build(device.as_ref().unwrap_or(&stand_in))
            .map_err(|e| errors.push(e))
            .ok();

        let metrics_listen = match self.telemetry.metrics_listen.as_str() {
            "" => None,
            s => s
                .parse::<SocketAddr>()
                .map_err(|e| {
                    errors.push(ConfigError::invalid(
                        "telemetry.metrics_listen",
                        format!("{s:?}: {e}; expected ip:port such as 127.0.0.1:9464, or empty"),
                    ))
                })
                .ok(),
        };

        let mut log = self.log.clone();
        if !log.file.as_os_str().is_empty() {
            log.file = resolve(&log.file);
        }
        if log.max_bytes < MIN_LOG_BYTES {
            errors.push(ConfigError::invalid(
                "log.max_bytes",
                format!("must be ≥ {MIN_LOG_BYTES} (64 KiB)"),
            ));
        }
        if log.keep > 100 {
            errors.push(ConfigError::invalid("log.keep", "must be ≤ 100"));
        }

        match (device, mqtt) {
            (Some(device), Some(mqtt)) if errors.is_empty() => Ok(Settings {
                device,
                device_type,
                data_dir,
                ingest,
                recognize,
                quarantine,
                outbox,
                mqtt,
                metrics_listen,
                log,
            }),
            _ => Err(errors),
        }
    }
}

/// `p` against `base` unless it is absolute.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// The directory relative paths in the file at `path` are resolved against.
fn base_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Loads and validates `path` (relative paths against its directory).
pub fn load_settings(path: &Path) -> Result<Settings, Vec<ConfigError>> {
    let config = Config::load(path).map_err(|e| vec![e])?;
    config.validate(base_of(path))
}

/// What the offline commands (`agent outbox`, `agent requeue`) need from the file, resolved as
/// [`load_settings`] resolves it, without the rest of the validation: a missing model or
/// secret must not stop an operator from inspecting the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPaths {
    /// `data_dir`.
    pub data_dir: PathBuf,
    /// `quarantine.dir`.
    pub quarantine_dir: PathBuf,
    /// `ingest.export_dirs`.
    pub export_dirs: Vec<PathBuf>,
    /// `outbox.max_bytes`.
    pub max_bytes: u64,
}

/// Reads the [`AdminPaths`] of the file at `path`.
pub fn load_admin_paths(path: &Path) -> Result<AdminPaths, ConfigError> {
    let config = Config::load(path)?;
    let base = base_of(path);
    Ok(AdminPaths {
        data_dir: resolve(base, &config.data_dir),
        quarantine_dir: resolve(base, &config.quarantine.dir),
        export_dirs: config
            .ingest
            .export_dirs
            .iter()
            .map(|p| resolve(base, p))
            .collect(),
        max_bytes: config.outbox.max_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_to_the_defaults() {
        let parsed = Config::parse("agent.toml", DEFAULT_CONFIG).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_key() {
        let err = Config::parse("a.toml", "[ingest]\nsettle_secs = 3\n").unwrap_err();
        assert!(err.to_string().contains("settle_secs"), "{err}");
        let err = Config::parse("a.toml", "[outbox]\nwindow = \"big\"\n").unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
            device_id = "Bad/Id"
            device_type = "toaster"
            [ingest]
            export_dirs = ["exports"]
            [quarantine]
            dir = "exports/q"
            [outbox]
            window = 0
            defer_initial_secs = 600
            defer_max_secs = 60
            [publish]
            broker_url = "http://x"
            [recognize]
            quality_sample = 1.5
            [telemetry]
            metrics_listen = "localhost"
        "#;
        let errors = Config::parse("a.toml", text)
            .unwrap()
            .validate(dir.path())
            .unwrap_err();
        let keys: Vec<String> = errors
            .iter()
            .filter_map(|e| match e {
                ConfigError::Invalid { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        for k in [
            "device_id",
            "device_type",
            "quarantine.dir",
            "outbox.window",
            "outbox.defer_max_secs",
            "recognize.templates_dir",
            "recognize.model_path",
            "recognize.quality_sample",
            "telemetry.metrics_listen",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not reported in {keys:?}");
        }
    }

    #[test]
    fn quality_sample_takes_a_share_and_names_the_key_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        for (text, want) in [
            ("quality_sample = 0.0", Some(0.0)),
            ("quality_sample = 1.0", Some(1.0)),
            ("quality_sample = 0.02", Some(0.02)),
            ("quality_sample = -0.1", None),
            ("quality_sample = 2.0", None),
            ("quality_sample = nan", None),
        ] {
            let c = Config::parse("a.toml", &format!("[recognize]\n{text}\n")).unwrap();
            match (c.validate(dir.path()), want) {
                (Ok(s), Some(v)) => assert_eq!(s.recognize.quality_sample, v, "{text}"),
                (Err(errors), None) => {
                    let e = errors.iter().map(|e| e.to_string()).collect::<String>();
                    assert!(e.contains("recognize.quality_sample"), "{text}: {e}");
                }
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(Config::default().recognize.quality_sample, 0.005);
    }

    #[test]
    fn validate_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        let s = Config::default().validate(dir.path()).unwrap();
        assert_eq!(s.data_dir, dir.path().join("data"));
        assert_eq!(s.ingest.export_dirs, vec![dir.path().join("exports")]);
        assert_eq!((s.mqtt.broker.port, s.mqtt.broker.tls), (8883, true));
    }
}
