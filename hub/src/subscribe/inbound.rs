//! The message the subscribe stage emits: one MQTT publish from (or attributed to) a device,
//! untouched. Nothing here is trusted yet; the validate and status stages decide.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use record::topic::{parse_device_topic, DeviceTopic};
use record::DeviceId;

/// One device publish as received.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The topic it was published on.
    pub topic: String,
    /// The device of the topic, or (for a publish the gate refused) the authenticated device.
    /// `None` when the topic names no valid device.
    pub device: Option<DeviceId>,
    /// What the topic carries; `None` when it is not a device topic.
    pub kind: Option<DeviceTopic>,
    /// The payload, as received.
    pub payload: Bytes,
    /// When the hub received it.
    pub received_at: DateTime<Utc>,
    /// Set by the gate when the publish broke the topic rules (why); such a message is
    /// stored as a reject and never loaded.
    pub refused: Option<String>,
}

impl Inbound {
    /// A publish taken off the broker.
    pub fn from_broker(topic: String, payload: Bytes) -> Self {
        let parsed = parse_device_topic(&topic);
        Self {
            device: parsed.as_ref().map(|(d, _)| d.clone()),
            kind: parsed.map(|(_, k)| k),
            topic,
            payload,
            received_at: Utc::now(),
            refused: None,
        }
    }

    /// A publish the gate refused: `device` is the authenticated device.
    pub fn refused(device: DeviceId, topic: String, payload: Bytes, reason: String) -> Self {
        let kind = parse_device_topic(&topic).map(|(_, k)| k);
        Self {
            device: Some(device),
            kind,
            topic,
            payload,
            received_at: Utc::now(),
            refused: Some(reason),
        }
    }
}
