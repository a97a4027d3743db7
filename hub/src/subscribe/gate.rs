//! The gate: the device-facing MQTT 3.1.1 listener of the embedded broker. Each connection is
//! relayed, packet by packet, to rumqttd's loopback listener, and the gate enforces what
//! rumqttd cannot (it has no per-topic ACL):
//!
//! - CONNECT: username = client id = a registered device id, password verified
//!   ([`crate::auth::Credentials`]); otherwise CONNACK "bad username or password" and close.
//!   A last will must be the device's own status topic. The login is then replaced by the
//!   hub's per-process secret, the only login rumqttd accepts.
//! - PUBLISH: a device may publish only on its own `records`, `rejections` and `status`
//!   topics; a reader account publishes nothing. A refused QoS 0/1 publish is answered by the
//!   gate (PUBACK), never forwarded, and handed to the pipeline as a reject with the reason.
//! - SUBSCRIBE: a device may subscribe only to its own `receipts`; a reader to the results tree
//!   and status topics. Otherwise the gate answers SUBACK failure.
//!
//! An open session's login is checked again every `recheck_login_secs`: a device revoked or
//! rotated meanwhile is disconnected (its next CONNECT needs the new password).
//!
//! Everything else, and everything from the broker, passes through unchanged. With
//! `tls_cert_file`/`tls_key_file` the listener speaks TLS (rustls) and the checks above run on
//! the decrypted stream.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::{
    check, ConnAck, ConnectReturnCode, Login, PacketType, PubAck, Publish, QoS, SubAck, Subscribe,
    SubscribeReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::auth::{Account, Credentials, Refusal, Role};
use crate::config::Secret;
use crate::subscribe::Inbound;
use crate::telemetry;
use record::topic::{self, parse_device_topic, DeviceTopic};

/// A connection the gate dropped.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Socket trouble.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Not MQTT 3.1.1, or malformed.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No CONNECT in time.
    #[error("no CONNECT within the timeout")]
    ConnectTimeout,
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}

/// The TLS certificate or key of the device listener could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TlsSetupError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// A TLS acceptor from a PEM certificate chain and private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let err = |path: &Path, problem: String| TlsSetupError {
        path: path.to_owned(),
        problem,
    };
    let read = |path: &Path| std::fs::read(path).map_err(|e| err(path, e.to_string()));
    let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert, "no certificate in the file".into()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| err(key, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| err(key, "no private key in the file".into()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| err(cert, format!("certificate and key do not go together: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl From<rumqttc::mqttbytes::Error> for GateError {
    fn from(e: rumqttc::mqttbytes::Error) -> Self {
        GateError::Protocol(e.to_string())
    }
}

/// What every connection needs.
pub struct GateContext {
    /// rumqttd's loopback listener.
    pub internal: SocketAddr,
    /// How often an open session's login is checked again (revoked or rotated: closed).
    pub recheck_login: Duration,
    /// TLS for device connections (`None`: plain MQTT).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The login rumqttd accepts.
    pub secret: Secret,
    /// Device login verification.
    pub credentials: Arc<Credentials>,
    /// Where refused publishes go (the validate stage's input).
    pub refused: mpsc::Sender<Inbound>,
    /// Largest packet.
    pub max_packet_bytes: usize,
    /// CONNECT deadline.
    pub connect_timeout: Duration,
    /// Most connections.
    pub max_connections: usize,
}

/// Accepts device connections until shutdown, one task per connection.
pub async fn run(listener: TcpListener, ctx: Arc<GateContext>, shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(ctx.max_connections));
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                warn!(%error, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "Connection limit reached; closing.");
            continue;
        };
        let (ctx, mut stop) = (ctx.clone(), shutdown.clone());
        let span = tracing::info_span!("device_connection", %peer, device = tracing::field::Empty);
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    r = accept(stream, &ctx) => if let Err(error) = r {
                        debug!(%error, "Device connection ended.");
                    }
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// TLS handshake where configured, then [`serve`].
async fn accept(client: TcpStream, ctx: &GateContext) -> Result<(), GateError> {
    client.set_nodelay(true)?;
    match &ctx.tls {
        None => serve(client, ctx).await,
        Some(acceptor) => {
            let tls = tokio::time::timeout(ctx.connect_timeout, acceptor.accept(client))
                .await
                .map_err(|_| GateError::ConnectTimeout)?
                .map_err(|e| {
                    metrics::counter!(telemetry::CONNECTS_REFUSED, "code" => "tls").increment(1);
                    GateError::Tls(e)
                })?;
            serve(tls, ctx).await
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    ctx: &GateContext,
) -> Result<(), GateError> {
    let mut cbuf = BytesMut::with_capacity(8192);
    let connect = tokio::time::timeout(ctx.connect_timeout, async {
        loop {
            match rumqttc::mqttbytes::v4::read(&mut cbuf, ctx.max_packet_bytes) {
                Ok(p) => return Ok(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(GateError::from(e)),
            }
            if client.read_buf(&mut cbuf).await? == 0 {
                return Err(GateError::Protocol("closed before CONNECT".into()));
            }
        }
    })
    .await
    .map_err(|_| GateError::ConnectTimeout)??;
    let rumqttc::Packet::Connect(mut connect) = connect else {
        return Err(GateError::Protocol("first packet is not CONNECT".into()));
    };
    if connect.protocol != rumqttc::Protocol::V4 {
        return refuse(
            &mut client,
            ConnectReturnCode::RefusedProtocolVersion,
            "protocol",
        )
        .await;
    }
    let Some(login) = connect.login.take() else {
        warn!(client_id = %connect.client_id, "CONNECT without credentials refused.");
        return refuse(
            &mut client,
            ConnectReturnCode::BadUserNamePassword,
            "no_login",
        )
        .await;
    };
    let account = match ctx
        .credentials
        .verify(&login.username, &login.password)
        .await
    {
        Ok(a) if connect.client_id == a.device.as_str() => a,
        Ok(_) => {
            warn!(client_id = %connect.client_id, user = %login.username, "Client id differs from username; refused.");
            return refuse(&mut client, ConnectReturnCode::BadClientId, "client_id").await;
        }
        Err(Refusal::BadCredentials) => {
            warn!(user = %login.username, "Bad credentials; CONNECT refused.");
            return refuse(
                &mut client,
                ConnectReturnCode::BadUserNamePassword,
                "credentials",
            )
            .await;
        }
        Err(Refusal::Unavailable) => {
            return refuse(
                &mut client,
                ConnectReturnCode::ServiceUnavailable,
                "unavailable",
            )
            .await;
        }
    };
    tracing::Span::current().record("device", account.device.as_str());
    if let Some(will) = &connect.last_will {
        let own = DeviceTopic::Status.topic(&account.device);
        if will.topic != own || account.role != Role::Device {
            warn!(topic = %will.topic, "Last will outside the device's status topic; refused.");
            return refuse(&mut client, ConnectReturnCode::NotAuthorized, "will").await;
        }
    }
    let mut broker = TcpStream::connect(ctx.internal).await?;
    broker.set_nodelay(true)?;
    connect.login = Some(Login::new(account.device.as_str(), ctx.secret.expose()));
    let mut out = BytesMut::new();
    connect.write(&mut out)?;
    broker.write_all(&out).await?;
    metrics::counter!(telemetry::CONNECTS_ACCEPTED).increment(1);
    info!("Device connected.");
    relay(client, broker, cbuf, &account, ctx).await
}

async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    code: ConnectReturnCode,
    why: &'static str,
) -> Result<(), GateError> {
    metrics::counter!(telemetry::CONNECTS_REFUSED, "code" => why).increment(1);
    let mut out = BytesMut::new();
    ConnAck::new(code, false).write(&mut out)?;
    client.write_all(&out).await?;
    client.shutdown().await?;
    Ok(())
}

/// What to do with one packet from the device.
enum Verdict {
    Forward,
    /// Not forwarded; answer with these bytes (possibly none); `Some` = report as reject.
    Answer(BytesMut, Option<Inbound>),
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    mut broker: TcpStream,
    mut cbuf: BytesMut,
    account: &Account,
    ctx: &GateContext,
) -> Result<(), GateError> {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = broker.split();
    let mut bbuf = BytesMut::with_capacity(8192);
    let max = ctx.max_packet_bytes;
    let mut recheck = tokio::time::interval(ctx.recheck_login);
    recheck.tick().await;
    loop {
        // Device → broker: forward allowed packets as one write, answer refused ones.
        let mut to_broker = BytesMut::new();
        let mut to_client = BytesMut::new();
        loop {
            let header = match check(cbuf.iter(), max) {
                Ok(h) => h,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(e.into()),
            };
            let frame = cbuf.split_to(header.frame_length());
            match judge(header, frame.clone().freeze(), account)? {
                Verdict::Forward => to_broker.extend_from_slice(&frame),
                Verdict::Answer(answer, report) => {
                    to_client.extend_from_slice(&answer);
                    if let Some(inbound) = report {
                        if ctx.refused.send(inbound).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if !to_broker.is_empty() {
            bw.write_all(&to_broker).await?;
        }
        if !to_client.is_empty() {
            cw.write_all(&to_client).await?;
        }
        // Broker → device: forward whole packets only, so answers never split one.
        let mut complete = 0;
        loop {
            match check(bbuf[complete..].iter(), max) {
                Ok(h) => complete += h.frame_length(),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if complete > 0 {
            let chunk = bbuf.split_to(complete);
            cw.write_all(&chunk).await?;
        }
        tokio::select! {
            n = cr.read_buf(&mut cbuf) => if n? == 0 { return Ok(()) },
            n = br.read_buf(&mut bbuf) => if n? == 0 { return Ok(()) },
            _ = recheck.tick() => {
                if ctx.credentials.still_valid(account).await == Some(false) {
                    warn!("Login revoked or rotated; closing the session.");
                    metrics::counter!(telemetry::CONNECTS_REFUSED, "code" => "revoked").increment(1);
                    return Ok(());
                }
            }
        }
    }
}

fn judge(
    header: rumqttc::FixedHeader,
    frame: Bytes,
    account: &Account,
) -> Result<Verdict, GateError> {
    match header.packet_type()? {
        PacketType::Publish => {
            let p = Publish::read(header, frame)?;
            let Err(reason) = may_publish(account, &p.topic) else {
                return Ok(Verdict::Forward);
            };
            warn!(topic = %p.topic, reason, "Publish refused.");
            let mut answer = BytesMut::new();
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    PubAck::new(p.pkid).write(&mut answer)?;
                }
                QoS::ExactlyOnce => {
                    return Err(GateError::Protocol(format!(
                        "refused QoS 2 publish: {reason}"
                    )))
                }
            }
            let report = Inbound::refused(account.device.clone(), p.topic, p.payload, reason);
            Ok(Verdict::Answer(answer, Some(report)))
        }
        PacketType::Subscribe => {
            let s = Subscribe::read(header, frame)?;
            if s.filters.iter().all(|f| may_subscribe(account, &f.path)) {
                return Ok(Verdict::Forward);
            }
            warn!(filters = ?s.filters.iter().map(|f| &f.path).collect::<Vec<_>>(), "Subscribe refused.");
            let mut answer = BytesMut::new();
            let codes = vec![SubscribeReasonCode::Failure; s.filters.len()];
            SubAck::new(s.pkid, codes).write(&mut answer)?;
            Ok(Verdict::Answer(answer, None))
        }
        PacketType::Connect => Err(GateError::Protocol("second CONNECT".into())),
        _ => Ok(Verdict::Forward),
    }
}

/// Whether `account` may publish on `topic`; `Err` says why not.
pub fn may_publish(account: &Account, topic: &str) -> Result<(), String> {
    if account.role != Role::Device {
        return Err("reader accounts may not publish".into());
    }
    match parse_device_topic(topic) {
        Some((d, kind)) if d == account.device && kind != DeviceTopic::Receipts => Ok(()),
        Some((d, _)) if d != account.device => Err(format!(
            "device {} may not publish under device {d}'s topic",
            account.device
        )),
        _ => Err(format!(
            "device {} may not publish on {topic:?}",
            account.device
        )),
    }
}

/// Whether `account` may subscribe to `filter`.
pub fn may_subscribe(account: &Account, filter: &str) -> bool {
    match account.role {
        Role::Device => filter == DeviceTopic::Receipts.topic(&account.device),
        Role::Reader => {
            let results = format!("{}/{}/", topic::ROOT, topic::RESULTS);
            let status = filter
                .strip_prefix(&format!("{}/{}/", topic::ROOT, topic::DEVICES))
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(dev, kind)| {
                    kind == topic::STATUS && !dev.contains('#') && !dev.is_empty()
                });
            filter.starts_with(&results) || status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::DeviceId;

    fn acct(id: &str, role: Role) -> Account {
        Account {
            device: DeviceId::new(id).unwrap(),
            role,
        }
    }

    #[test]
    fn devices_publish_only_under_their_own_topics() {
        let a = acct("autoref-01", Role::Device);
        assert!(may_publish(&a, "examlink/v1/devices/autoref-01/records").is_ok());
        assert!(may_publish(&a, "examlink/v1/devices/autoref-01/status").is_ok());
        let err = may_publish(&a, "examlink/v1/devices/autoref-02/records").unwrap_err();
        assert!(err.contains("autoref-02"), "{err}");
        assert!(may_publish(&a, "examlink/v1/devices/autoref-01/receipts").is_err());
        assert!(may_publish(&a, "examlink/v1/results/autoref/autoref-01").is_err());
        assert!(may_publish(&acct("r", Role::Reader), "examlink/v1/devices/r/records").is_err());
    }

    #[test]
    fn subscriptions_are_scoped() {
        let a = acct("autoref-01", Role::Device);
        assert!(may_subscribe(&a, "examlink/v1/devices/autoref-01/receipts"));
        assert!(!may_subscribe(&a, "examlink/v1/devices/+/receipts"));
        assert!(!may_subscribe(&a, "#"));
        let r = acct("dash", Role::Reader);
        assert!(may_subscribe(&r, "examlink/v1/results/#"));
        assert!(may_subscribe(&r, "examlink/v1/devices/+/status"));
        assert!(!may_subscribe(&r, "examlink/v1/devices/+/records"));
        assert!(!may_subscribe(&r, "examlink/v1/devices/#"));
    }
}
