//! publish: MQTT to the hub. QoS 1, credentials, TLS for `mqtts://`, a window of messages in
//! flight, resends until the hub's receipt, reconnects with backoff and jitter, a retained
//! status message and a last will that marks the device offline.
//!
//! - [`mqtt`]: `[publish]` config, broker URL, credentials, TLS, last will.
//! - [`stage`]: the event loop driving [`crate::outbox::Outbox`].

pub mod mqtt;
pub mod stage;

pub use mqtt::{BrokerUrl, MqttSettings, PublishConfig};
pub use stage::{PublishError, Publisher};
