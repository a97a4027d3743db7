//! subscribe: take every device message off MQTT and hand it to the pipeline.
//!
//! - [`inbound`]: the message type the stage emits.
//! - [`mqtt`]: the hub's own MQTT client connections (one subscribing, one publishing), used in
//!   both modes.
//! - [`embedded`]: the in-process `rumqttd` broker behind the device [`gate`].
//! - [`gate`]: the device-facing listener: authenticates at CONNECT and enforces [`acl`].
//! - [`acl`]: who may publish and subscribe where (pure rules).
//! - [`external`]: the settings for an external broker with a shared subscription.

pub mod acl;
pub mod embedded;
pub mod external;
pub mod gate;
pub mod inbound;
pub mod mqtt;

pub use embedded::{EmbeddedBroker, EmbeddedError};
pub use inbound::Inbound;
pub use mqtt::{MqttError, Publisher, Subscriber};
