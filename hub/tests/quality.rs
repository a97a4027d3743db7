//! Quality sampling against a real hub and PostgreSQL: records arriving with sample crops
//! (payload schema v2) queue blind checks; a reviewer's agreeing answer is counted; a
//! disagreeing one is counted and sends the field to a person (measurement `invalid`, a review
//! item, a new revision, audited); `/review/quality` and `/metrics` show the counts and the
//! 95% Wilson interval.

mod util;

use hub::config::BrokerMode;
use hub::testkit;
use hub::users::UserRole;
use record::{DeviceId, ReceiptOutcome, Record, ReviewCrop};
use util::{device, TestHub, TestSchema};

/// A PNG signature and a few bytes: the hub checks the signature, the browser draws nothing.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

/// Record `n` of `d` with a sample crop of `field`.
fn sampled(d: &DeviceId, n: u64, field: &str) -> Record {
    use base64::Engine;
    let mut r = testkit::record(d, n);
    r.sample_crops.push(ReviewCrop {
        field: field.into(),
        png_base64: base64::engine::general_purpose::STANDARD.encode(PNG),
        context: None,
    });
    r
}

fn value_of<'r>(r: &'r Record, field: &str) -> &'r str {
    r.field(field).and_then(|f| f.value.as_deref()).unwrap()
}

/// `POST /review/blind` as the bearer of `token`.
async fn answer(
    hub: &TestHub,
    token: &str,
    r: &Record,
    field: &str,
    value: &str,
) -> util::Response {
    let auth = format!("Bearer {token}");
    let body = util::form(&[
        ("record_id", r.record_id.as_str()),
        ("field", field),
        ("value", value),
        ("action", "value"),
        ("csrf", ""),
    ]);
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", auth.as_str()),
    ];
    hub.request("POST", "/review/blind", &headers, &body).await
}

/// The line of the metric `name` whose labels include every one of `labels`.
fn metric<'m>(text: &'m str, name: &str, labels: &[&str]) -> Option<&'m str> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_checks_count_agreements_and_send_disagreements_to_review() {
    let schema = TestSchema::new("quality");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-q1", "autoref").await;
    let vera = schema.add_user("vera", UserRole::Reviewer).await;
    let rita = schema.add_user("rita", UserRole::Reader).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-q1", &pw_dev).await;
    let dev = DeviceId::new("autoref-q1").unwrap();

    // Two records with one sample crop each: v2 payloads, which this hub takes.
    let a = sampled(&dev, 1, "r_sph");
    let b = sampled(&dev, 2, "pd");
    let payload = String::from_utf8(record::encode(&a)).unwrap();
    assert!(payload.contains("\"schema_version\":2"), "{payload}");
    for r in [&a, &b] {
        d.publish_record(r).await;
        let receipt = d.receipt().await;
        assert_eq!(receipt.outcome, ReceiptOutcome::Stored, "{receipt:?}");
    }
    let db = schema.client().await;
    let row = db
        .query_one(
            "SELECT read_value, template, template_version, length(crop_png), answered_at IS NULL \
             FROM blind_checks WHERE record_id = $1 AND field = 'r_sph'",
            &[&a.record_id.as_str()],
        )
        .await
        .unwrap();
    let (read, template, version, crop, pending): (String, String, i32, i32, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(read, value_of(&a, "r_sph"));
    assert_eq!((template.as_str(), version), (testkit::TEMPLATE_ID, 3));
    assert_eq!((crop as usize, pending), (PNG.len(), true));
    assert_eq!(
        schema
            .count("SELECT count(*) FROM blind_checks WHERE answered_at IS NULL")
            .await,
        2
    );
    // The stored payload and the live result stay v1: the crop lives in blind_checks only.
    let stored: serde_json::Value = db
        .query_one(
            "SELECT payload FROM records WHERE record_id = $1",
            &[&a.record_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored["schema_version"], 1);
    assert!(stored.get("sample_crops").is_none());
    // A resend is a duplicate and queues nothing more.
    d.publish_record(&a).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Duplicate);
    assert_eq!(schema.count("SELECT count(*) FROM blind_checks").await, 2);

    // The page shows the oldest check: the crop and the field, never the value read.
    let token = hub.token("vera", &vera).await;
    let (status, page) = hub.get_as(&token, "/review/blind").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<h1 id=\"check\">r_sph</h1>"), "{page}");
    assert!(page.contains("data:image/png;base64,"), "{page}");
    assert!(
        !page.contains(value_of(&a, "r_sph")),
        "the read is hidden: {page}"
    );
    // A reader may not answer blind checks.
    let reader = hub.token("rita", &rita).await;
    assert_eq!(hub.get_as(&reader, "/review/blind").await.0, 403);

    // An answer the grammar refuses comes back with the reason; nothing changes.
    let refused = answer(&hub, &token, &a, "r_sph", "1.7x").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("id=\"error\""), "{}", refused.body);
    assert_eq!(
        schema
            .count("SELECT count(*) FROM blind_checks WHERE answered_at IS NOT NULL")
            .await,
        0
    );

    // Agreeing (typed as printed; the grammar normalises it).
    let agreed = answer(&hub, &token, &a, "r_sph", value_of(&a, "r_sph")).await;
    assert_eq!(agreed.status, 303, "{}", agreed.body);
    assert!(agreed.header("location").unwrap().contains("last=agreed"));
    let row = db
        .query_one(
            "SELECT agrees, answered_by, answer FROM blind_checks WHERE record_id = $1",
            &[&a.record_id.as_str()],
        )
        .await
        .unwrap();
    let (agrees, by, said): (bool, String, String) = (row.get(0), row.get(1), row.get(2));
    assert!(agrees);
    assert_eq!(
        (by.as_str(), said.as_str()),
        ("vera", value_of(&a, "r_sph"))
    );
    let status: String = db
        .query_one(
            "SELECT status FROM measurements WHERE record_id = $1 AND field = 'r_sph'",
            &[&a.record_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "ok");
    // Answered once: a second answer finds nothing pending and goes on.
    let again = answer(&hub, &token, &a, "r_sph", "+9.00").await;
    assert!(again.header("location").unwrap().contains("last=none"));

    // Disagreeing: the field goes to a person.
    assert_eq!(value_of(&b, "pd"), "62");
    let disagreed = answer(&hub, &token, &b, "pd", "64").await;
    assert_eq!(disagreed.status, 303, "{}", disagreed.body);
    assert!(disagreed
        .header("location")
        .unwrap()
        .contains("last=disagreed"));
    let id = b.record_id.as_str();
    let row = db
        .query_one(
            "SELECT value, status, reason FROM measurements WHERE record_id = $1 AND field = 'pd'",
            &[&id],
        )
        .await
        .unwrap();
    let (value, status, reason): (Option<String>, String, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!((value, status.as_str()), (None, "invalid"));
    assert_eq!(reason.as_deref(), Some("blind check by vera read 64"));
    let row = db
        .query_one(
            "SELECT status, raw, reason, crop_png, resolved_at IS NULL FROM review_queue \
             WHERE record_id = $1 AND field = 'pd'",
            &[&id],
        )
        .await
        .unwrap();
    let (status, raw, crop, pending): (String, Option<String>, Option<Vec<u8>>, bool) =
        (row.get(0), row.get(1), row.get(3), row.get(4));
    assert_eq!((status.as_str(), raw.as_deref()), ("invalid", Some("62")));
    assert_eq!(
        crop.as_deref(),
        Some(PNG),
        "the sample crop goes with the item"
    );
    assert!(pending);
    let row = db
        .query_one(
            "SELECT revision, review_count FROM records WHERE record_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (2, 1));
    let row = db
        .query_one(
            "SELECT value, status, revision, changed_by FROM measurement_history \
             WHERE record_id = $1 AND field = 'pd'",
            &[&id],
        )
        .await
        .unwrap();
    let history: (Option<String>, String, i32, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(history, (Some("62".into()), "ok".into(), 1, "vera".into()));
    // It is now an item of the review station's queue, with the reason.
    let (status, queue) = hub.get_as(&token, "/api/review").await;
    assert_eq!(status, 200, "{queue}");
    assert!(queue.contains("blind check by vera read 64"), "{queue}");

    // Audited: both answers, and the pages that showed a check (patient data).
    assert_eq!(
        schema
            .count("SELECT count(*) FROM audit WHERE action = 'review.blind' AND actor = 'vera'")
            .await,
        2
    );
    assert_eq!(
        schema
            .count(
                "SELECT count(*) FROM audit WHERE action = 'review.blind' \
                 AND detail->>'field' = 'pd' AND detail->>'agrees' = 'false' \
                 AND detail->>'read' = '62' AND detail->>'answer' = '64'"
            )
            .await,
        1
    );
    assert!(
        schema
            .count(
                "SELECT count(*) FROM audit WHERE action = 'review.read' \
                 AND detail->>'blind_check' = 'true'"
            )
            .await
            >= 2
    );
    let (_, empty) = hub.get_as(&token, "/review/blind").await;
    assert!(empty.contains("id=\"empty\""), "{empty}");

    // The estimate, for a reader: per field, and overall 1 of 2 with its Wilson interval.
    let (status, q) = hub.get_as(&reader, "/review/quality").await;
    assert_eq!(status, 200, "{q}");
    let (lower, upper) = hub::quality::wilson(1, 2);
    for want in [
        "<td>autoref_test</td><td>pd</td><td class=\"n\">1</td><td class=\"n\">1</td>\
         <td class=\"n\">100.00%</td>",
        "<td>autoref_test</td><td>r_sph</td><td class=\"n\">1</td><td class=\"n\">0</td>\
         <td class=\"n\">0.00%</td>",
        "<tr class=\"all\"><td>all</td><td>all</td><td class=\"n\">2</td><td class=\"n\">1</td>\
         <td class=\"n\">50.00%</td>",
        &format!("{:.2}% to {:.2}%", lower * 100.0, upper * 100.0),
        "<span id=\"pending\">0</span>",
    ] {
        assert!(q.contains(want), "{want} not in {q}");
    }

    // /metrics: the counters and the estimate's bounds, labelled by template and field.
    let (_, m) = hub.get("/metrics").await;
    let t = "template=\"autoref_test\"";
    let line = |name: &str, labels: &[&str]| {
        metric(&m, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} not in {m}"))
    };
    assert!(line(
        "examlink_hub_blind_checks_answered_total",
        &[t, "field=\"pd\""]
    )
    .ends_with(" 1"));
    assert!(line(
        "examlink_hub_blind_checks_disagreed_total",
        &[t, "field=\"pd\""]
    )
    .ends_with(" 1"));
    assert!(line(
        "examlink_hub_blind_checks_disagreed_total",
        &[t, "field=\"r_sph\""]
    )
    .ends_with(" 0"));
    let upper_line = line(
        "examlink_hub_ok_wrong_ratio",
        &[t, "field=\"r_sph\"", "bound=\"upper\""],
    );
    let upper_value: f64 = upper_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (upper_value - hub::quality::wilson(0, 1).1).abs() < 1e-9,
        "{upper_line}"
    );
    assert!(line(
        "examlink_hub_ok_wrong_overall_ratio",
        &["bound=\"estimate\""]
    )
    .ends_with(" 0.5"));
    assert!(m.contains("examlink_hub_blind_checks_pending 0"), "{m}");

    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_crops_must_be_of_ok_fields_and_need_schema_v2() {
    let schema = TestSchema::new("qualitybad");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-q2", "autoref").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-q2", &pw_dev).await;
    let dev = DeviceId::new("autoref-q2").unwrap();

    // A sample crop of a field that needs review: refused, never queued.
    let mut flagged = sampled(&dev, 1, "r_cyl");
    let f = &mut flagged.fields[4];
    f.status = record::FieldStatus::Unreadable;
    f.value = None;
    f.number = None;
    d.publish_record(&flagged).await;
    let receipt = d.receipt().await;
    assert_eq!(receipt.outcome, ReceiptOutcome::Rejected);
    assert!(receipt.reason.unwrap().starts_with("crop:"));
    // Sample crops in a payload that says v1: a schema reject.
    let v2 = sampled(&dev, 2, "r_sph");
    let mut v: serde_json::Value = serde_json::from_slice(&record::encode(&v2)).unwrap();
    v["schema_version"] = 1.into();
    let topic = record::topic::DeviceTopic::Records.topic(&dev);
    d.publish(&topic, serde_json::to_vec(&v).unwrap()).await;
    let receipt = d.receipt().await;
    assert_eq!(receipt.outcome, ReceiptOutcome::Rejected);
    assert!(receipt.reason.unwrap().starts_with("schema:"));
    // A payload newer than this hub reads: deferred (the agent keeps it), never rejected.
    v["schema_version"] = (record::SCHEMA_VERSION + 1).into();
    d.publish(&topic, serde_json::to_vec(&v).unwrap()).await;
    let receipt = d.receipt().await;
    assert_eq!(receipt.outcome, ReceiptOutcome::Deferred, "{receipt:?}");
    assert_eq!(schema.count("SELECT count(*) FROM blind_checks").await, 0);
    hub.stop().await;
}
