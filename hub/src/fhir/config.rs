//! `[fhir]`: how resources are written and where they are pushed.

use std::path::PathBuf;

use axum::http::Uri;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::secret::SecretRef;

/// `[fhir]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Identifier system (an absolute URI) of the chart numbers: the hospital's own.
    pub patient_system: String,
    /// The devices' UTC offset (`+01:00`); empty: `effectiveDateTime` is the exam date only.
    pub exam_utc_offset: String,
    /// Base URL of the FHIR server to push to (`https://ehr.example/fhir`); empty: no push.
    pub push_url: String,
    /// PEM CA file the push server's certificate must chain to (needed for `https`).
    #[serde(default)]
    pub push_tls_ca_file: Option<PathBuf>,
    /// File holding a bearer token for the push server.
    #[serde(default)]
    pub push_token_file: Option<PathBuf>,
    /// Environment variable holding that token.
    #[serde(default)]
    pub push_token_env: Option<String>,
    /// How long one request may take.
    pub push_timeout_ms: u64,
    /// First retry delay of an export whose push failed (doubling per failure).
    pub push_retry_initial_ms: u64,
    /// Longest retry delay.
    pub push_retry_max_secs: u64,
    /// How often the queue is looked at when it was empty.
    pub push_poll_ms: u64,
    /// Exports taken from the queue at a time.
    pub push_batch: i64,
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Where the push goes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `https` or `http`.
    pub tls: bool,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The base path without a trailing `/` (`/fhir`).
    pub path: String,
}

impl FhirConfig {
    /// The bearer token's location.
    pub fn push_token(&self) -> SecretRef {
        SecretRef {
            password_file: self.push_token_file.clone(),
            password_env: self.push_token_env.clone(),
        }
    }

    /// The parsed `push_url`, `None` when the push is off.
    pub fn push_target(&self) -> Result<Option<PushTarget>, ConfigError> {
        if self.push_url.is_empty() {
            return Ok(None);
        }
        let bad = || {
            invalid(
                "fhir.push_url",
                "not an http(s) URL with a host, like https://ehr.example/fhir",
            )
        };
        let uri: Uri = self.push_url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        if uri.query().is_some() {
            return Err(invalid("fhir.push_url", "must not have a query"));
        }
        Ok(Some(PushTarget {
            tls,
            host: host.trim_matches(['[', ']']).to_owned(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: uri.path().trim_end_matches('/').to_owned(),
        }))
    }

    /// Checks the values (called by [`crate::config::HubConfig`]'s check).
    pub fn check(&self) -> Result<(), ConfigError> {
        let s = &self.patient_system;
        let scheme_ok = s
            .split_once(':')
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
        if !scheme_ok || s.contains(char::is_whitespace) || s.contains('|') {
            return Err(invalid(
                "fhir.patient_system",
                "must be an absolute URI without spaces or '|' (e.g. urn:oid:... or https://...)",
            ));
        }
        let off = self.exam_utc_offset.as_bytes();
        let offset_ok = off.is_empty()
            || (off.len() == 6
                && matches!(off[0], b'+' | b'-')
                && off[3] == b':'
                && [1, 2, 4, 5].iter().all(|&i| off[i].is_ascii_digit()));
        if !offset_ok {
            return Err(invalid(
                "fhir.exam_utc_offset",
                "use +HH:MM or -HH:MM, or leave empty",
            ));
        }
        if let Some(t) = self.push_target()? {
            if t.tls && self.push_tls_ca_file.is_none() {
                return Err(invalid(
                    "fhir.push_tls_ca_file",
                    "an https push_url needs the CA file its certificate chains to",
                ));
            }
        }
        if self.push_timeout_ms == 0 || self.push_poll_ms == 0 {
            return Err(invalid(
                "fhir.push_timeout_ms",
                "fhir.push_timeout_ms and push_poll_ms must be at least 1",
            ));
        }
        if self.push_retry_initial_ms == 0
            || self.push_retry_initial_ms > self.push_retry_max_secs.saturating_mul(1000)
        {
            return Err(invalid(
                "fhir.push_retry_initial_ms",
                "must be 1..=fhir.push_retry_max_secs * 1000",
            ));
        }
        if !(1..=1000).contains(&self.push_batch) {
            return Err(invalid("fhir.push_batch", "must be 1..=1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::HubConfig;

    #[test]
    fn defaults_push_nothing_and_bad_values_name_their_key() {
        let c = HubConfig::default().fhir;
        assert!(c.push_target().unwrap().is_none());
        assert!(c.patient_system.starts_with("https://"));
        let t = HubConfig::from_toml_str("t", "[fhir]\npush_url = \"http://127.0.0.1:9/fhir/\"")
            .unwrap()
            .fhir
            .push_target()
            .unwrap()
            .unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 9, "/fhir"));
        for (toml, key) in [
            ("push_url = \"ftp://x/fhir\"", "fhir.push_url"),
            ("push_url = \"https://ehr/fhir\"", "fhir.push_tls_ca_file"),
            ("patient_system = \"chart number\"", "fhir.patient_system"),
            ("exam_utc_offset = \"CET\"", "fhir.exam_utc_offset"),
            ("push_batch = 0", "fhir.push_batch"),
            ("push_retry_initial_ms = 0", "fhir.push_retry_initial_ms"),
        ] {
            let err = HubConfig::from_toml_str("t", &format!("[fhir]\n{toml}")).unwrap_err();
            assert!(err.to_string().starts_with(key), "{toml}: {err}");
        }
    }
}
