//! The checks of one message against the hub's templates (see the stage's docs in `validate`).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use record::rules::Seen;
use record::topic::DeviceTopic;
use record::{CodecError, DeviceId, Record, RecordId, Template, TemplateSet};

use crate::config::ValidateConfig;
use crate::subscribe::Inbound;
use crate::templates::{Catalog, Versions};

use super::fields;

/// Decoded review or sample crops: field name and PNG bytes.
pub type Crops = Vec<(String, Vec<u8>)>;
/// Decoded context crops: field name, PNG bytes, the field's box in it (`[x, y, w, h]`).
pub type Contexts = Vec<(String, Vec<u8>, [i32; 4])>;

/// A record that passed every check, ready to load.
#[derive(Debug)]
pub struct Valid {
    /// The record.
    pub record: Record,
    /// The record re-encoded ([`record::encode`]) without its sample crops: what is
    /// republished on the results tree (so schema v1: the blind checks stay at the hub).
    pub encoded: Bytes,
    /// The JSON stored in `records.payload` (the record without its review and sample crops,
    /// which go to `review_queue` and `blind_checks`).
    pub stored_json: String,
    /// Decoded review crops.
    pub crops: Crops,
    /// Decoded sample crops (quality sampling): fields read `ok` for the blind-check queue.
    pub samples: Crops,
    /// Decoded context crops of the fields that need review.
    pub contexts: Contexts,
    /// When the hub received it.
    pub received_at: DateTime<Utc>,
    /// Why the record's clocks look wrong, when they do: it is stored with `clock_suspect`
    /// and a review item, never refused.
    pub clock: Option<String>,
}

/// Reason codes that mean "not yet": the record is deferred, not rejected.
pub const DEFERRED_CODES: &[&str] = &[
    "unknown_template",
    "template_version",
    "schema_version_newer",
    "unknown_device",
    "device_type",
];

/// Whether a failure with this code is one the hub may be able to take later.
pub fn is_deferred(code: &str) -> bool {
    DEFERRED_CODES.contains(&code)
}

/// A message that failed a check: stored in `rejects`, answered with a Rejected receipt when
/// its record id is known.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The device it is attributed to (topic device, or the authenticated one).
    pub device: Option<DeviceId>,
    /// The record id, when the payload carried a well-formed one.
    pub record_id: Option<RecordId>,
    /// The topic.
    pub topic: String,
    /// Stable reason code.
    pub code: &'static str,
    /// Human-readable reason.
    pub reason: String,
    /// Whether it is deferred (the hub cannot take it *yet*) rather than rejected.
    pub defer: bool,
    /// The payload, capped at `validate.reject_payload_cap_bytes` (by default the whole payload).
    pub payload: Bytes,
    /// The payload's full size.
    pub payload_size: usize,
    /// When the hub received it.
    pub received_at: DateTime<Utc>,
}

/// The stage's output.
#[derive(Debug)]
pub enum Checked {
    /// Passed.
    Valid(Box<Valid>),
    /// Failed.
    Rejected(Reject),
}

/// Applies the checks with a fixed template set.
#[derive(Debug, Clone)]
pub struct Validator {
    catalog: Arc<Catalog>,
    config: ValidateConfig,
}

struct Fail(&'static str, String);

/// A record that passed the checks, with its decoded crops and the clock verdict.
struct Passed {
    record: Record,
    crops: Crops,
    samples: Crops,
    contexts: Contexts,
    clock: Option<String>,
}

impl Validator {
    /// A validator for one version per template: `templates`.
    pub fn new(templates: Arc<TemplateSet>, config: ValidateConfig) -> Self {
        Self::with_catalog(Arc::new(Catalog::new(Versions::of_set(&templates))), config)
    }

    /// A validator checking each record against its exact version in `catalog`.
    pub fn with_catalog(catalog: Arc<Catalog>, config: ValidateConfig) -> Self {
        Self { catalog, config }
    }

    /// Checks one message at time `now`.
    pub fn check(&self, inbound: Inbound, now: DateTime<Utc>) -> Checked {
        match self.check_record(&inbound, now) {
            Ok(Passed {
                record,
                crops,
                samples,
                contexts,
                clock,
            }) => {
                // Published and stored as v1: no sample or context crops.
                let mut lean = record.clone();
                lean.sample_crops.clear();
                for c in &mut lean.review_crops {
                    c.context = None;
                }
                let encoded = Bytes::from(record::encode(&lean));
                let stored_json = if lean.review_crops.is_empty() {
                    String::from_utf8_lossy(&encoded).into_owned()
                } else {
                    lean.review_crops.clear();
                    String::from_utf8_lossy(&record::encode(&lean)).into_owned()
                };
                Checked::Valid(Box::new(Valid {
                    record,
                    encoded,
                    stored_json,
                    crops,
                    samples,
                    contexts,
                    received_at: inbound.received_at,
                    clock,
                }))
            }
            Err(Fail(code, reason)) => Checked::Rejected(self.reject(inbound, code, reason)),
        }
    }

    /// Builds a reject for `inbound` (also used by the load stage).
    pub fn reject(&self, inbound: Inbound, code: &'static str, reason: String) -> Reject {
        let record_id = record_id_of(&inbound.payload);
        let size = inbound.payload.len();
        let cap = size.min(self.config.reject_payload_cap_bytes);
        // A deferral is answered by record id: without one (or a device) it is a reject.
        let defer = is_deferred(code) && record_id.is_some() && inbound.device.is_some();
        Reject {
            device: inbound.device,
            record_id,
            topic: inbound.topic.replace('\0', "\u{fffd}"),
            defer,
            code,
            reason,
            payload: inbound.payload.slice(..cap),
            payload_size: size,
            received_at: inbound.received_at,
        }
    }

    fn check_record(&self, inbound: &Inbound, now: DateTime<Utc>) -> Result<Passed, Fail> {
        if let Some(why) = &inbound.refused {
            return Err(Fail("forbidden", why.clone()));
        }
        let (Some(device), Some(DeviceTopic::Records)) = (&inbound.device, inbound.kind) else {
            return Err(Fail(
                "topic",
                format!("{:?} is not a device records topic", inbound.topic),
            ));
        };
        let size = inbound.payload.len();
        if size > self.config.max_payload_bytes {
            let max = self.config.max_payload_bytes;
            return Err(Fail(
                "too_large",
                format!("payload of {size} bytes exceeds {max}"),
            ));
        }
        let record: Record = record::decode(&inbound.payload).map_err(|e| {
            let code = match e {
                CodecError::TooLarge { .. } => "too_large",
                CodecError::Json(_) | CodecError::NotAnObject => "invalid_json",
                CodecError::UnsupportedVersion { found } if found > record::SCHEMA_VERSION => {
                    "schema_version_newer"
                }
                CodecError::MissingVersion | CodecError::UnsupportedVersion { .. } => {
                    "schema_version"
                }
                CodecError::Schema { .. } => "schema",
            };
            Fail(code, e.to_string())
        })?;
        if &record.device_id != device {
            return Err(Fail(
                "device_mismatch",
                format!(
                    "payload device_id {} differs from topic device {device}",
                    record.device_id
                ),
            ));
        }
        fields::check_text(&record).map_err(|r| Fail("text", r))?;
        let versions = self.catalog.snapshot();
        let template = template_of(&versions, &record)?;
        let derived = RecordId::derive(
            &record.device_id,
            &record.image_sha256,
            &record.template_id,
            record.template_version,
        );
        if derived != record.record_id {
            return Err(Fail(
                "record_id",
                format!("record_id is not derived from the content (expected {derived})"),
            ));
        }
        // "Today" for date ranges: the hub's, or the agent's when its clock is ahead (a fast
        // clock makes the record clock_suspect below; it never makes a value invalid here).
        let today = now.max(record.captured_at).date_naive();
        fields::check_fields(&record, template, today).map_err(|r| Fail("value", r))?;
        fields::check_header(&record).map_err(|r| Fail("header", r))?;
        check_rules(&record, template)?;
        let clock = self.check_dates(&record, now)?;
        let crops = fields::decode_crops(&record).map_err(|r| Fail("crop", r))?;
        let samples = fields::decode_sample_crops(&record).map_err(|r| Fail("crop", r))?;
        let contexts = fields::decode_contexts(&record).map_err(|r| Fail("crop", r))?;
        Ok(Passed {
            record,
            crops,
            samples,
            contexts,
            clock,
        })
    }

    /// Checks the record's clocks. A date that cannot be parsed is a failure; a clock far off
    /// is not: the reason comes back, and the record is stored with `clock_suspect`.
    fn check_dates(&self, r: &Record, now: DateTime<Utc>) -> Result<Option<String>, Fail> {
        let skew = Duration::seconds(self.config.max_clock_skew_secs as i64);
        let floor = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
            .expect("constant date")
            .with_timezone(&Utc);
        let mut why = Vec::new();
        for (name, at) in [
            ("captured_at", r.captured_at),
            ("recognized_at", r.recognized_at),
        ] {
            if at > now + skew {
                let ahead = (at - now).num_minutes();
                why.push(format!(
                    "{name} {at} is {ahead} min ahead of the hub's clock ({now}): the device PC's clock is fast"
                ));
            } else if at < floor {
                why.push(format!(
                    "{name} {at} is before 2000: the device PC's clock is wrong"
                ));
            }
        }
        if r.recognized_at + skew < r.captured_at {
            why.push("recognized_at is before captured_at".into());
        }
        if let Some(d) = r.exam_date.as_deref() {
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| Fail("dates", format!("exam_date {d:?} is not an ISO date")))?;
            // The exam happens before its export is taken (a day of slack for time zones).
            let latest = r.captured_at.max(now) + skew;
            if date > latest.date_naive() + Duration::days(1) {
                why.push(format!(
                    "exam_date {d} is after the export was taken ({}): the device's clock is fast",
                    r.captured_at
                ));
            }
        }
        Ok((!why.is_empty()).then(|| why.join("; ")))
    }
}

/// The exact template version a record was read with.
fn template_of<'v>(versions: &'v Versions, r: &Record) -> Result<&'v Template, Fail> {
    let Some(t) = versions.get(&r.template_id, r.template_version) else {
        let known = versions.versions_of(&r.template_id);
        return Err(if known.is_empty() {
            Fail(
                "unknown_template",
                format!("the hub does not know template {:?} (yet)", r.template_id),
            )
        } else {
            Fail(
                "template_version",
                format!(
                    "the hub knows template {} at versions {known:?}, not (yet) version {}",
                    r.template_id, r.template_version
                ),
            )
        });
    };
    if t.device_type != r.device_type || t.firmware != r.firmware {
        return Err(Fail(
            "template_mismatch",
            format!(
                "template {} is for {}/{}, record says {}/{}",
                t.id, t.device_type, t.firmware, r.device_type, r.firmware
            ),
        ));
    }
    Ok(t)
}

fn check_rules(r: &Record, t: &Template) -> Result<(), Fail> {
    let seen = Seen::of_fields(&r.fields);
    match t.rules.iter().find_map(|rule| rule.check(&seen)) {
        Some(v) => Err(Fail(
            "rule",
            format!("fields marked ok break a rule: {}", v.reason),
        )),
        None => Ok(()),
    }
}

/// The record id of a payload that failed decoding, if it carries a well-formed one.
fn record_id_of(payload: &[u8]) -> Option<RecordId> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    RecordId::parse(v.get("record_id")?.as_str()?).ok()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
