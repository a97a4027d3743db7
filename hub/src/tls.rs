//! TLS for the hub's own listeners (the device MQTT listener and HTTP), on by default.
//!
//! Either the operator names a certificate chain and key (`[tls] cert_file`, `key_file`), or
//! the hub makes its own at first start: a private CA and a server certificate it signs for
//! `[tls] hostnames` (plus `localhost`, `127.0.0.1` and `::1`), written to `generate_dir` as
//! `ca.pem` (give it to agents and HTTP clients), `hub-cert.pem` and `hub-key.pem` (mode 0600).
//! The CA's private key is never written: to add a host name, delete the folder and restart
//! (every agent then needs the new `ca.pem`). Later starts load the files again.
//!
//! Plain TCP only with `allow_plaintext = true`, and then a WARN at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// File names inside `generate_dir`.
pub const CA_FILE: &str = "ca.pem";
/// The generated server certificate.
pub const CERT_FILE: &str = "hub-cert.pem";
/// The generated server key.
pub const KEY_FILE: &str = "hub-key.pem";

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the hub (the operator's own); with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Where the generated CA and certificate live when no `cert_file` is given.
    pub generate_dir: PathBuf,
    /// Host names (or IP addresses) the generated certificate is valid for, beside
    /// localhost, 127.0.0.1 and ::1.
    pub hostnames: Vec<String>,
    /// Speak plain TCP (no TLS) on both listeners when no `cert_file` is given.
    pub allow_plaintext: bool,
}

/// The certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TlsSetupError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

fn err(path: &Path, problem: impl Into<String>) -> TlsSetupError {
    TlsSetupError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// The hub's TLS identity, shared by its listeners.
#[derive(Clone)]
pub struct HubTls {
    /// The acceptor for both listeners.
    pub acceptor: TlsAcceptor,
    /// The CA file clients need, when the hub made its own certificate.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the first certificate clients should trust (the generated CA,
    /// else the operator's leaf certificate), as colon-separated hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for HubTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTls")
            .field("ca_file", &self.ca_file)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Loads or makes the hub's certificate; `None` when plaintext is configured (logged at WARN).
pub fn prepare(config: &TlsConfig) -> Result<Option<HubTls>, TlsSetupError> {
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let (acceptor, first) = acceptor(cert, key)?;
            let fingerprint = fingerprint(&first);
            info!(cert = %cert.display(), %fingerprint, "TLS with the configured certificate.");
            Ok(Some(HubTls {
                acceptor,
                ca_file: None,
                fingerprint,
            }))
        }
        (Some(p), None) | (None, Some(p)) => Err(err(
            p,
            "set tls.cert_file and tls.key_file together (or neither)",
        )),
        (None, None) if config.allow_plaintext => {
            warn!("tls.allow_plaintext = true: device MQTT and HTTP are NOT encrypted; passwords and patient data cross the network in clear.");
            Ok(None)
        }
        (None, None) => {
            let dir = &config.generate_dir;
            let (ca, cert, key) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
            let made = if cert.exists() && key.exists() && ca.exists() {
                false
            } else {
                generate(dir, &config.hostnames)?;
                true
            };
            let (acceptor, _) = acceptor(&cert, &key)?;
            let ca_der = read_chain(&ca)?
                .into_iter()
                .next()
                .ok_or_else(|| err(&ca, "no certificate in the file"))?;
            let fingerprint = fingerprint(&ca_der);
            let what = if made {
                "Generated a TLS certificate"
            } else {
                "TLS with the generated certificate"
            };
            info!(ca_file = %ca.display(), %fingerprint, "{what}; agents and HTTP clients trust this CA file (publish.tls_ca_file).");
            Ok(Some(HubTls {
                acceptor,
                ca_file: Some(ca),
                fingerprint,
            }))
        }
    }
}

/// Makes a private CA and a server certificate signed by it for `hostnames` (plus the
/// loopback names) in `dir`.
pub fn generate(dir: &Path, hostnames: &[String]) -> Result<(), TlsSetupError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let rc = |e: rcgen::Error| err(dir, format!("making the certificate: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "examlink hub CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(rc)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hostnames {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::new(names).map_err(rc)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "examlink hub");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(rc)?;

    write(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), true)?;
    write(&dir.join(CERT_FILE), cert.pem().as_bytes(), false)?;
    // The CA last: its presence says the set is complete.
    write(&dir.join(CA_FILE), ca.pem().as_bytes(), false)
}

fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsSetupError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| err(&tmp, e.to_string()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&tmp, e.to_string()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e.to_string()))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("not a PEM certificate chain: {e}")))
}

/// A TLS acceptor from a PEM certificate chain and private key, and the chain's first
/// certificate.
pub fn acceptor(
    cert: &Path,
    key: &Path,
) -> Result<(TlsAcceptor, CertificateDer<'static>), TlsSetupError> {
    let chain = read_chain(cert)?;
    let first = chain
        .first()
        .cloned()
        .ok_or_else(|| err(cert, "no certificate in the file"))?;
    let bytes = std::fs::read(key).map_err(|e| err(key, e.to_string()))?;
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| err(key, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| err(key, "no private key in the file"))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| err(cert, format!("certificate and key do not go together: {e}")))?;
    Ok((TlsAcceptor::from(Arc::new(config)), first))
}

/// A rustls client configuration trusting the certificates in `ca_pem` (for the hub's own
/// TLS clients: PostgreSQL and an external broker).
pub fn client_config(ca_file: &Path) -> Result<tokio_rustls::rustls::ClientConfig, TlsSetupError> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in read_chain(ca_file)? {
        roots
            .add(c)
            .map_err(|e| err(ca_file, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err(ca_file, "no certificate in the file"));
    }
    Ok(tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Colon-separated upper-case hex of the certificate's SHA-256.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: None,
            key_file: None,
            generate_dir: dir.to_owned(),
            hostnames: vec!["hub.example".into()],
            allow_plaintext: false,
        }
    }

    #[test]
    fn generates_once_then_reuses_and_clients_trust_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = prepare(&config(dir.path())).unwrap().unwrap();
        let ca = first.ca_file.clone().unwrap();
        assert_eq!(ca, dir.path().join(CA_FILE));
        let again = prepare(&config(dir.path())).unwrap().unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "reloaded, not remade");
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        client_config(&ca).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }

    #[test]
    fn plaintext_only_when_allowed_and_halves_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.allow_plaintext = true;
        assert!(prepare(&c).unwrap().is_none());
        c.cert_file = Some(dir.path().join("x.pem"));
        let e = prepare(&c).unwrap_err();
        assert!(e.problem.contains("together"), "{e}");
    }
}
