//! FHIR (#16) through a hub running in this process: records in over MQTT, `/fhir` out over
//! HTTPS behind the logins, a review correction that amends an Observation and leaves a
//! Provenance, and the push to a stand-in FHIR server that is down at first.

mod util;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hub::config::BrokerMode;
use hub::testkit;
use hub::users::UserRole;
use record::{DeviceId, FieldStatus, ReceiptOutcome};
use serde_json::Value;
use util::{device, form, free_port, TestHub, TestSchema, PATIENCE};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The entries' resources of a searchset Bundle.
fn entries(bundle: &Value) -> Vec<Value> {
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| x["resource"].clone()).collect())
        .unwrap_or_default()
}

// See: #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_correction_amends_the_observation_and_leaves_a_provenance() {
    let schema = TestSchema::new("fhir_review");
    schema.migrate().await;
    let pw = schema.add_device("autoref-07", "autoref").await;
    let reader = schema.add_user("rhea", UserRole::Reader).await;
    let reviewer = schema.add_user("vik", UserRole::Reviewer).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-07", &pw).await;
    // r_sph the reader could not read: it printed -1.00, a person reads -1.25.
    let mut r = testkit::record(&dev("autoref-07"), 7);
    let sph = r.fields.iter_mut().find(|f| f.name == "r_sph").unwrap();
    sph.status = FieldStatus::Unreadable;
    sph.value = None;
    sph.number = None;
    sph.raw = Some("-1.00".into());
    sph.reason = Some("low confidence".into());
    d.publish_record(&r).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    let id = r.record_id.as_str();
    let patient = r.patient_id.clone().unwrap();

    // No login: 401 as an OperationOutcome. Unknown parameters: 400.
    let q = format!("/fhir/Observation?patient={patient}&code=refraction");
    let resp = hub.request("GET", &q, &[], "").await;
    assert_eq!(resp.status, 401);
    assert_eq!(json(&resp.body)["resourceType"], "OperationOutcome");
    let token = hub.token("rhea", &reader).await;
    let auth = format!("Bearer {token}");
    let (status, body) = hub.get_as(&token, &format!("{q}&colour=red")).await;
    assert_eq!(
        (status, json(&body)["resourceType"].clone()),
        (400, "OperationOutcome".into())
    );

    let resp = hub
        .request("GET", &q, &[("Authorization", &auth)], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    let found = entries(&json(&resp.body));
    assert_eq!(found.len(), 2, "refraction OD and OS");
    let od = found
        .iter()
        .find(|o| o["bodySite"]["coding"][0]["code"] == "362503005")
        .unwrap();
    assert_eq!(od["status"], "preliminary");
    assert_eq!(
        od["component"][0]["dataAbsentReason"]["coding"][0]["code"],
        "temp-unknown"
    );
    let os = found
        .iter()
        .find(|o| o["bodySite"]["coding"][0]["code"] == "362502000")
        .unwrap();
    assert_eq!(os["status"], "final");
    assert_eq!(os["component"][0]["valueQuantity"]["code"], "[diop]");
    let obs_id = od["id"].as_str().unwrap().to_owned();

    // The reviewer corrects it.
    let rtoken = hub.token("vik", &reviewer).await;
    let rauth = format!("Bearer {rtoken}");
    let body = form(&[("record_id", id), ("field", "r_sph"), ("value", "-1.25")]);
    let resp = hub
        .request(
            "POST",
            "/api/review",
            &[FORM, ("Authorization", &rauth)],
            &body,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(json(&resp.body)["status"], "corrected");

    let (status, body) = hub
        .get_as(&token, &format!("/fhir/Observation/{obs_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let od = json(&body);
    assert_eq!(od["status"], "amended");
    assert_eq!(
        od["component"][0]["valueQuantity"]["value"],
        serde_json::json!(-1.25)
    );
    let (status, body) = hub
        .get_as(
            &token,
            &format!("/fhir/Provenance?target=Observation/{obs_id}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let prov = entries(&json(&body));
    assert_eq!(prov.len(), 1, "{body}");
    assert_eq!(prov[0]["agent"][0]["who"]["identifier"]["value"], "vik");
    let what = prov[0]["activity"]["text"].as_str().unwrap();
    assert!(
        what.contains("\"-1.00\"") && what.contains("\"-1.25\"") && what.contains("corrected"),
        "{what}"
    );
    let (status, body) = hub
        .get_as(&token, &format!("/fhir/DiagnosticReport/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["status"], "amended");
    assert!(report["result"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["reference"] == format!("Observation/{obs_id}")));
    let (status, _) = hub.get_as(&token, "/fhir/DiagnosticReport/0123").await;
    assert_eq!(status, 404);

    // Every read of patient data was audited, the 404 too.
    let reads = schema
        .count("SELECT count(*) FROM audit WHERE action = 'fhir.read' AND actor = 'rhea'")
        .await;
    assert_eq!(reads, 5);
    // The capability statement is open and names the searches.
    let (status, body) = hub.get("/fhir/metadata").await;
    assert_eq!(status, 200);
    let cs = json(&body);
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert!(body.contains("\"search-type\"") && body.contains("\"Observation\""));
    hub.stop().await;
}

/// A stand-in FHIR server: conditional updates on `identifier`, kept by type and identifier;
/// a request that is not a proper conditional update is refused (400) and noted.
#[derive(Default)]
struct StandIn {
    stored: BTreeMap<(String, String), Value>,
    puts: usize,
    wrong: Vec<String>,
}

async fn stand_in(
    state: Arc<Mutex<StandIn>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut s = state.lock().unwrap();
    s.puts += 1;
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kind = path.strip_prefix("/fhir/").unwrap_or_default().to_owned();
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let problem = if method != Method::PUT {
        Some(format!("{method} {uri}"))
    } else if ct != Some("application/fhir+json") {
        Some(format!("{uri}: content-type {ct:?}"))
    } else if body["resourceType"] != kind.split('/').next().unwrap_or_default() {
        Some(format!("{uri}: body is a {}", body["resourceType"]))
    } else if let Some(id) = kind.strip_prefix("Provenance/") {
        (body["id"] != id).then(|| format!("{uri}: id {}", body["id"]))
    } else {
        let ident = body
            .get("masterIdentifier")
            .or_else(|| body["identifier"].get(0))
            .map(|i| {
                format!(
                    "{}|{}",
                    i["system"].as_str().unwrap_or(""),
                    i["value"].as_str().unwrap_or("")
                )
            });
        match (pairs.as_slice(), ident) {
            ([(k, v)], Some(i)) if k == "identifier" && *v == i && body.get("id").is_none() => None,
            _ => Some(format!(
                "{uri}: not a conditional update on the body's identifier"
            )),
        }
    };
    if let Some(p) = problem {
        s.wrong.push(p);
        return (StatusCode::BAD_REQUEST, "{}".into());
    }
    let key = (kind, uri.query().unwrap_or_default().to_owned());
    let created = s.stored.insert(key, body).is_none();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, "{}".into())
}

async fn wait(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// See: #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_waits_out_a_server_that_is_down_and_a_resend_changes_nothing() {
    let schema = TestSchema::new("fhir_push");
    schema.migrate().await;
    let pw = schema.add_device("autoref-08", "autoref").await;
    let port = free_port();
    let hub = TestHub::start_with(&schema, BrokerMode::Embedded, "unused", |c| {
        c.fhir.push_url = format!("http://127.0.0.1:{port}/fhir");
        c.fhir.push_retry_initial_ms = 100;
        c.fhir.push_retry_max_secs = 1;
        c.fhir.push_poll_ms = 50;
    })
    .await;
    let mut d = device(&hub, "autoref-08", &pw).await;
    for n in 1..=3 {
        d.publish_record(&testkit::record(&dev("autoref-08"), n))
            .await;
        assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    }
    // Nobody listens: every export stays queued and is retried.
    wait("three failed attempts per export", async || {
        schema
            .count("SELECT count(*) FROM fhir_queue WHERE attempts >= 3")
            .await
            == 3
    })
    .await;
    let (_, metrics) = hub.get("/metrics").await;
    assert!(
        metrics.contains("examlink_hub_fhir_push_failures_total{kind=\"connect\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("examlink_hub_fhir_push_backlog 3"),
        "{metrics}"
    );

    // The server comes up on that port: everything queued arrives.
    let state = Arc::new(Mutex::new(StandIn::default()));
    let app = {
        let state = state.clone();
        axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            stand_in(state.clone(), m, u, h, b)
        })
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    wait("an empty queue", async || {
        schema.count("SELECT count(*) FROM fhir_queue").await == 0
    })
    .await;
    let (first_puts, first_stored) = {
        let s = state.lock().unwrap();
        assert!(s.wrong.is_empty(), "{:#?}", s.wrong);
        (s.puts, s.stored.clone())
    };
    // Per export: Device, DocumentReference, 5 Observations (refraction and keratometry per
    // eye, PD), DiagnosticReport; one Device for all three.
    let count = |t: &str| first_stored.keys().filter(|(k, _)| k == t).count();
    assert_eq!(
        (
            count("Device"),
            count("DocumentReference"),
            count("Observation"),
            count("DiagnosticReport")
        ),
        (1, 3, 15, 3)
    );
    assert_eq!(first_puts, 3 * 8);

    // Everything sent again (as after a restart that lost the acknowledgements): nothing new.
    schema
        .client()
        .await
        .execute(
            "INSERT INTO fhir_queue (record_id) SELECT record_id FROM records",
            &[],
        )
        .await
        .unwrap();
    wait("the resend", async || {
        let puts = state.lock().unwrap().puts;
        puts >= 2 * first_puts && schema.count("SELECT count(*) FROM fhir_queue").await == 0
    })
    .await;
    {
        let s = state.lock().unwrap();
        assert!(s.wrong.is_empty(), "{:#?}", s.wrong);
        assert_eq!(
            s.stored, first_stored,
            "a resend changed what the server holds"
        );
    }
    server.abort();
    hub.stop().await;
}
