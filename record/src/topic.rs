//! The MQTT topic tree, in one place. Every level below `examlink/v1` is one of the consts here.
//!
//! | topic | direction | QoS | retained | payload |
//! |---|---|---|---|---|
//! | `examlink/v1/devices/{device}/records` | agent → hub | 1 | no | [`crate::Record`] |
//! | `examlink/v1/devices/{device}/rejections` | agent → hub | 1 | no | [`crate::Rejection`] |
//! | `examlink/v1/devices/{device}/status` | agent → hub | 1 | yes (also the last will) | [`crate::StatusReport`] |
//! | `examlink/v1/devices/{device}/receipts` | hub → agent | 1 | no | [`crate::Receipt`] |
//! | `examlink/v1/results/{device_type}/{device}` | hub → subscribers | 1 | no | validated [`crate::Record`] |
//!
//! A device may publish only under its own `devices/{device}/` prefix; the hub enforces it.
//! Hubs sharing an external broker subscribe with `$share/{group}/` in front of the record filters.

use crate::ids::DeviceId;

/// Root of every examlink topic, with the topic-tree version.
pub const ROOT: &str = "examlink/v1";
/// Level under which each device's topics live.
pub const DEVICES: &str = "devices";
/// Level of the live results tree.
pub const RESULTS: &str = "results";
/// Records, device → hub.
pub const RECORDS: &str = "records";
/// Rejections, device → hub.
pub const REJECTIONS: &str = "rejections";
/// Retained status and last will, device → hub.
pub const STATUS: &str = "status";
/// Receipts, hub → device.
pub const RECEIPTS: &str = "receipts";

/// What a device topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTopic {
    /// `records`
    Records,
    /// `rejections`
    Rejections,
    /// `status`
    Status,
    /// `receipts`
    Receipts,
}

impl DeviceTopic {
    fn level(self) -> &'static str {
        match self {
            DeviceTopic::Records => RECORDS,
            DeviceTopic::Rejections => REJECTIONS,
            DeviceTopic::Status => STATUS,
            DeviceTopic::Receipts => RECEIPTS,
        }
    }

    /// The topic for `device`.
    pub fn topic(self, device: &DeviceId) -> String {
        format!("{ROOT}/{DEVICES}/{device}/{}", self.level())
    }

    /// The filter matching this topic for every device.
    pub fn filter_all(self) -> String {
        format!("{ROOT}/{DEVICES}/+/{}", self.level())
    }
}

/// The live results topic of one device.
pub fn results_topic(device_type: &str, device: &DeviceId) -> String {
    format!("{ROOT}/{RESULTS}/{device_type}/{device}")
}

/// The filter matching the live results of every device.
pub fn results_filter_all() -> String {
    format!("{ROOT}/{RESULTS}/#")
}

/// Splits a device topic into its device id and kind; `None` for anything else.
pub fn parse_device_topic(topic: &str) -> Option<(DeviceId, DeviceTopic)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(DEVICES)?.strip_prefix('/')?;
    let (device, kind) = rest.split_once('/')?;
    let kind = match kind {
        RECORDS => DeviceTopic::Records,
        REJECTIONS => DeviceTopic::Rejections,
        STATUS => DeviceTopic::Status,
        RECEIPTS => DeviceTopic::Receipts,
        _ => return None,
    };
    Some((DeviceId::new(device).ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let d = DeviceId::new("autoref-01").unwrap();
        let t = DeviceTopic::Records.topic(&d);
        assert_eq!(t, "examlink/v1/devices/autoref-01/records");
        assert_eq!(
            parse_device_topic(&t),
            Some((d.clone(), DeviceTopic::Records))
        );
        assert_eq!(parse_device_topic("examlink/v1/devices/a/b/records"), None);
        assert_eq!(parse_device_topic("examlink/v1/devices/UP/records"), None);
        assert_eq!(
            results_topic("autoref", &d),
            "examlink/v1/results/autoref/autoref-01"
        );
    }
}
