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
//! Before any of that, the [`Guard`]: an address at its connection cap is closed at accept, an
//! address backing off after failed logins is refused without hashing, and a CONNECT whose
//! fixed header claims more than `max_connect_bytes` is refused from the header alone, before
//! its body is read (so unauthenticated clients cannot make the hub buffer much).
//!
//! Everything else, and everything from the broker, passes through unchanged. The listener
//! speaks TLS (rustls, [`crate::tls`]) unless plaintext is allowed; the checks above run on
//! the decrypted stream. The topic rules themselves are [`acl`](super::acl).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::guard::Guard;
use crate::subscribe::acl::{may_publish, may_subscribe};
use crate::subscribe::Inbound;
use crate::telemetry;
use record::topic::DeviceTopic;

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
    /// Largest CONNECT packet.
    pub max_connect_bytes: usize,
    /// Per-address limits and the hashing semaphore.
    pub guard: Arc<Guard>,
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
        let Some(slot) = ctx.guard.connection(peer.ip()) else {
            debug!(%peer, "Connections per address at the cap; closing.");
            metrics::counter!(telemetry::GUARD_REFUSED, "why" => "address_cap").increment(1);
            continue;
        };
        let (ctx, mut stop) = (ctx.clone(), shutdown.clone());
        let span = tracing::info_span!("device_connection", %peer, device = tracing::field::Empty);
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    r = accept(stream, peer.ip(), &ctx) => if let Err(error) = r {
                        debug!(%error, "Device connection ended.");
                    }
                }
                drop(slot);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// TLS handshake where configured, then [`serve`].
async fn accept(client: TcpStream, ip: IpAddr, ctx: &GateContext) -> Result<(), GateError> {
    client.set_nodelay(true)?;
    match &ctx.tls {
        None => serve(client, ip, ctx).await,
        Some(acceptor) => {
            let tls = tokio::time::timeout(ctx.connect_timeout, acceptor.accept(client))
                .await
                .map_err(|_| GateError::ConnectTimeout)?
                .map_err(|e| {
                    metrics::counter!(telemetry::CONNECTS_REFUSED, "code" => "tls").increment(1);
                    GateError::Tls(e)
                })?;
            serve(tls, ip, ctx).await
        }
    }
}

/// Reads the CONNECT (the first packet) into `buf`: refuses from the fixed header alone a
/// packet larger than `max_bytes`, or anything that is not a CONNECT. `Ok(None)`: more bytes
/// are needed. Sans-IO, so the property tests feed it arbitrary bytes.
pub fn read_connect(
    buf: &mut BytesMut,
    max_bytes: usize,
) -> Result<Option<rumqttc::Connect>, GateError> {
    // The packet type is in the first byte's high nibble: refuse anything else at once.
    if buf.first().is_some_and(|b| b >> 4 != 1) {
        return Err(GateError::Protocol("first packet is not CONNECT".into()));
    }
    let header = match check(buf.iter(), max_bytes) {
        Ok(h) => h,
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n)) => {
            return Err(GateError::Protocol(format!(
                "CONNECT of {n} bytes exceeds the {max_bytes}-byte limit"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if header.packet_type()? != PacketType::Connect {
        return Err(GateError::Protocol("first packet is not CONNECT".into()));
    }
    let frame = buf.split_to(header.frame_length()).freeze();
    Ok(Some(rumqttc::Connect::read(header, frame)?))
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    ip: IpAddr,
    ctx: &GateContext,
) -> Result<(), GateError> {
    // Small until the device is authenticated; `read_buf` grows it only as far as the CONNECT
    // needs (at most max_connect_bytes plus one read).
    let mut cbuf = BytesMut::with_capacity(512);
    let mut connect = tokio::time::timeout(ctx.connect_timeout, async {
        loop {
            if let Some(c) = read_connect(&mut cbuf, ctx.max_connect_bytes)? {
                return Ok(c);
            }
            if cbuf.len() > ctx.max_connect_bytes {
                return Err(GateError::Protocol("CONNECT too large".into()));
            }
            cbuf.reserve(512);
            if client.read_buf(&mut cbuf).await? == 0 {
                return Err(GateError::Protocol("closed before CONNECT".into()));
            }
        }
    })
    .await
    .map_err(|_| GateError::ConnectTimeout)??;
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
    if let Err(wait) = ctx.guard.may_try(ip, Instant::now()) {
        debug!(user = %login.username, wait_ms = wait.as_millis() as u64, "Address backing off after failed logins; CONNECT refused.");
        metrics::counter!(telemetry::GUARD_REFUSED, "why" => "backoff").increment(1);
        return refuse(&mut client, ConnectReturnCode::NotAuthorized, "backoff").await;
    }
    let verified = ctx
        .credentials
        .verify(&login.username, &login.password)
        .await;
    match &verified {
        Ok(_) => ctx.guard.succeeded(ip),
        Err(Refusal::BadCredentials) => {
            ctx.guard.failed(ip, Instant::now());
            metrics::counter!(telemetry::LOGINS_REFUSED, "via" => "mqtt").increment(1);
        }
        Err(Refusal::Unavailable) => {}
    }
    let account = match verified {
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
    // Authenticated now: the buffer may grow to packet size as traffic needs.
    cbuf.reserve(8192);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use record::DeviceId;

    fn valid_connect() -> Vec<u8> {
        let mut c = rumqttc::Connect::new("autoref-01");
        c.login = Some(Login::new("autoref-01", "secret"));
        let mut out = BytesMut::new();
        c.write(&mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn a_valid_connect_is_read_whole_and_a_huge_one_from_its_header() {
        let bytes = valid_connect();
        // Byte by byte: more is needed until the last byte, then the CONNECT.
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = read_connect(&mut buf, 4096).unwrap();
            assert_eq!(r.is_some(), i + 1 == bytes.len());
        }
        // A header claiming 1 MiB is refused with only the header in hand.
        let mut buf = BytesMut::from(&[0x10u8, 0xFF, 0xFF, 0x3F][..]);
        let e = read_connect(&mut buf, 4096).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        // Anything but a CONNECT first is refused from its first byte.
        let mut buf = BytesMut::from(&[0x30u8][..]);
        assert!(read_connect(&mut buf, 4096).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        // Random bytes, and a valid CONNECT mutated: never a panic; either more bytes are
        // wanted while the buffer is within the cap, a CONNECT, or an error.
        #[test]
        fn connect_parsing_is_total_and_bounded(
            noise in prop::collection::vec(any::<u8>(), 0..600),
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            mutate in any::<bool>(),
        ) {
            let mut bytes = if mutate { valid_connect() } else { noise.clone() };
            if mutate {
                for (i, b) in &flips {
                    let n = bytes.len();
                    bytes[i % n] ^= b;
                }
                bytes.truncate(cut % (bytes.len() + 1));
                bytes.extend_from_slice(&noise);
            }
            let max = 256;
            let mut buf = BytesMut::from(&bytes[..]);
            match read_connect(&mut buf, max) {
                Ok(None) => prop_assert!(bytes.len() <= max + 5),
                Ok(Some(c)) => prop_assert!(c.client_id.len() <= max),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        // Frames after login: whatever a device sends, the gate's judge never panics.
        #[test]
        fn judging_random_frames_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let account = Account { device: DeviceId::new("autoref-01").unwrap(), role: Role::Device };
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(h) = check(buf.iter(), 1024) {
                let frame = buf.split_to(h.frame_length()).freeze();
                if judge(h, frame, &account).is_err() {
                    break;
                }
            }
        }
    }
}
