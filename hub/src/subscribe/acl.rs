//! Who may publish and subscribe where: the gate's topic rules, pure functions of an account
//! and a topic (no I/O), so every case is unit-tested here.
//!
//! - A device publishes only under its own `records`, `rejections` and `status` topics, and
//!   subscribes only to its own `receipts`.
//! - A reader account publishes nothing, and subscribes to the results tree and to devices'
//!   `status` topics (never their records, rejections or receipts).

use record::topic::{self, parse_device_topic, DeviceTopic};

use crate::auth::{Account, Role};

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
