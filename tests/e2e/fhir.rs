//! FHIR (#16) end to end: an export from every device type goes through the real agent and
//! hub binaries, and `/fhir/Observation?patient=…` returns each value the truth has, with its
//! code, UCUM unit and laterality; the push to a stand-in FHIR server that is down at first
//! delivers everything once it comes up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet::procs::AgentOptions;
use hub::fhir::mapping::{self, Eye, Laterality};
use serde_json::Value;

use crate::util::{wait_until, Run};

/// A stand-in FHIR server on a plain TCP port: HTTP/1.1 with keep-alive, conditional updates
/// on `identifier` kept by `Type?query`; anything else is refused (400) and noted.
#[derive(Default, Clone)]
struct StandIn {
    stored: Arc<Mutex<BTreeMap<String, Value>>>,
    wrong: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    fn start(port: u16) -> Self {
        let s = StandIn::default();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let me = s.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(conn));
            }
        });
        s
    }

    fn serve(&self, conn: std::net::TcpStream) {
        let mut out = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let (mut len, mut ct) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "content-type" => ct = v.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let status = self.handle(line.trim_end(), &ct, &body);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn handle(&self, line: &str, ct: &str, body: &[u8]) -> &'static str {
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let kind = path.strip_prefix("/fhir/").unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let ok = method == "PUT"
            && ct == "application/fhir+json"
            && body["resourceType"] == kind.split('/').next().unwrap_or("")
            && (kind.starts_with("Provenance/")
                || matches!(pairs.as_slice(), [(k, v)] if k == "identifier" && {
                    let i = body.get("masterIdentifier").or_else(|| body["identifier"].get(0));
                    i.is_some_and(|i| format!("{}|{}", i["system"].as_str().unwrap_or(""),
                                               i["value"].as_str().unwrap_or("")) == *v)
                }));
        if !ok {
            self.wrong.lock().unwrap().push(line.to_owned());
            return "400 Bad Request";
        }
        let key = format!("{kind}?{}", pairs.first().map_or("", |p| p.1.as_str()));
        match self.stored.lock().unwrap().insert(key, body) {
            None => "201 Created",
            Some(_) => "200 OK",
        }
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Every page of a search, following the `next` links.
fn search_all(run: &Run, token: &str, first: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = Some(first.to_owned());
    while let Some(p) = path.take() {
        let (status, body) = run.https_get_as(token, &p);
        assert_eq!(status, 200, "{p}: {body}");
        let b = json(&body);
        assert_eq!(b["type"], "searchset");
        out.extend(
            b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["resource"].clone()),
        );
        path = b["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(|u| u[u.find("/fhir/").unwrap()..].to_owned());
    }
    out
}

// See: #16
#[test]
fn every_device_type_is_served_as_fhir_and_pushed_after_an_outage() {
    let mut run = Run::new(
        "fhir",
        crate::util::LAYOUTS.len(),
        &AgentOptions::default(),
        false,
    );
    let port = fleet::free_port().unwrap();
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&run.hub.config)
        .unwrap();
    write!(
        config,
        "\n[fhir]\npush_url = \"http://127.0.0.1:{port}/fhir\"\npush_retry_initial_ms = 200\n\
         push_retry_max_secs = 2\npush_poll_ms = 100\n"
    )
    .unwrap();
    drop(config);
    run.start_hub();
    run.start_agents();
    run.emit(1);
    run.wait_all_stored(Duration::from_secs(300));
    run.check_exactly_once_and_truth();
    let password = run.hub.add_user("fhir-reader", "reader").unwrap();
    let token = run.token("fhir-reader", &password);

    let mut db = run.client().unwrap();
    let mut checked = BTreeMap::<String, usize>::new();
    let mut identifiers = BTreeSet::new();
    for d in &run.devices {
        for (name, label) in fleet::feed::truth(&d.truth).unwrap() {
            let row = db
                .query_one(
                    "SELECT record_id, patient_id FROM examlink.records \
                     WHERE device_id = $1 AND source_file = $2 AND superseded_by IS NULL",
                    &[&d.id, &name],
                )
                .unwrap();
            let (record, patient): (String, Option<String>) = (row.get(0), row.get(1));
            let Some(patient) = patient else {
                // The chart number was flagged: no patient to search by (a reviewer fills it).
                eprintln!("fhir: {name}: patient_id flagged, not searched");
                continue;
            };
            let status: BTreeMap<String, String> = db
                .query(
                    "SELECT field, status FROM examlink.measurements WHERE record_id = $1",
                    &[&record],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let truth: BTreeMap<&str, Option<&str>> = label
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            let mine: Vec<Value> = search_all(
                &run,
                &token,
                &format!("/fhir/Observation?patient={patient}&_count=3"),
            )
            .into_iter()
            .filter(|o| {
                o["identifier"][0]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with(&record)
            })
            .collect();
            assert!(!mine.is_empty(), "{name}: no Observations");
            let by_ident: BTreeMap<String, &Value> = mine
                .iter()
                .map(|o| (o["identifier"][0]["value"].as_str().unwrap().to_owned(), o))
                .collect();
            identifiers.extend(by_ident.keys().cloned());
            // One eye per exam: the truth's, unless the hub's eye field is flagged (then the
            // Observations carry none).
            let eye_read = status.get("eye").map(String::as_str) == Some("ok");
            let single = match truth.get("eye").copied().flatten().filter(|_| eye_read) {
                Some("OD") => Eye::Right,
                Some("OS") => Eye::Left,
                _ => Eye::None,
            };
            for m in mapping::measures(&label.device_type) {
                let eyes = match m.laterality {
                    Laterality::Prefixed => vec![Eye::Right, Eye::Left],
                    Laterality::EyeField => vec![single],
                    Laterality::NoEye => vec![Eye::None],
                };
                for eye in eyes {
                    let field = m.field_name(eye);
                    let code = m.code_for(eye);
                    let obs_code = m.group.map_or(code, |g| g.code);
                    let ident = format!("{record}/{}/{}", eye.key(), obs_code.code);
                    let o = by_ident
                        .get(&ident)
                        .unwrap_or_else(|| panic!("{name}: no {ident}"));
                    assert_eq!(o["code"]["coding"][0]["system"], obs_code.system, "{ident}");
                    let site = o["bodySite"]["coding"][0]["code"].as_str();
                    let want_site = eye.body_site().map(|c| c.code);
                    assert_eq!(site, want_site, "{ident}: laterality");
                    let value = match m.group {
                        Some(_) => o["component"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|c| c["code"]["coding"][0]["code"] == code.code)
                            .unwrap_or_else(|| panic!("{ident}: no component {}", code.code)),
                        None => o,
                    };
                    assert_eq!(value["code"]["coding"][0]["system"], code.system);
                    match (
                        status.get(&field).map(String::as_str),
                        truth[field.as_str()],
                    ) {
                        (Some("ok"), Some(t)) => {
                            let q = &value["valueQuantity"];
                            let want: f64 = t.trim_start_matches('+').parse().unwrap();
                            assert_eq!(q["value"].as_f64(), Some(want), "{ident} {field}");
                            assert_eq!(q["code"], m.ucum, "{ident} {field}");
                            assert_eq!(q["system"], "http://unitsofmeasure.org");
                            *checked.entry(label.device_type.clone()).or_default() += 1;
                        }
                        (Some("absent"), _) => {
                            assert!(value.get("dataAbsentReason").is_some(), "{ident} {field}");
                        }
                        (s, t) => {
                            // Flagged for review: no value, the Observation preliminary.
                            assert!(
                                value.get("valueQuantity").is_none(),
                                "{ident} {field}: {s:?} {t:?}"
                            );
                            assert_eq!(o["status"], "preliminary", "{ident} {field}: {s:?}");
                        }
                    }
                    if m.field == "iop" {
                        let want = if eye == Eye::Right {
                            "79892-6"
                        } else {
                            "79893-4"
                        };
                        assert_eq!(o["code"]["coding"][0]["code"], want);
                        assert_eq!(o["code"]["coding"][0]["system"], "http://loinc.org");
                    }
                }
            }
            let (status, body) =
                run.https_get_as(&token, &format!("/fhir/DiagnosticReport/{record}"));
            assert_eq!(status, 200, "{body}");
            assert_eq!(json(&body)["result"].as_array().unwrap().len(), mine.len());
        }
    }
    eprintln!("fhir: values checked against the truth per device type: {checked:?}");
    for t in [
        "autoref",
        "tonometer",
        "tomographer",
        "biometer",
        "specular",
        "asoct",
    ] {
        assert!(
            checked.get(t).copied().unwrap_or(0) > 0,
            "no {t} value checked: {checked:?}"
        );
    }

    // Nothing was pushed while the FHIR server was down, and nothing was dropped.
    let records = run.count("SELECT count(*) FROM examlink.records");
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.fhir_queue"),
        records
    );
    let retried = wait_until(Duration::from_secs(60), || {
        run.count("SELECT count(*) FROM examlink.fhir_queue WHERE attempts >= 1") == records
    });
    assert!(retried.is_some(), "the push did not try\n{}", run.logs());
    let server = StandIn::start(port);
    let drained = wait_until(Duration::from_secs(120), || {
        run.count("SELECT count(*) FROM examlink.fhir_queue") == 0
    });
    assert!(drained.is_some(), "the queue did not drain\n{}", run.logs());
    assert!(
        server.wrong.lock().unwrap().is_empty(),
        "{:?}",
        server.wrong.lock().unwrap()
    );
    let stored = server.stored.lock().unwrap();
    let pushed: BTreeSet<String> = stored
        .iter()
        .filter(|(k, _)| k.starts_with("Observation?"))
        .map(|(_, v)| v["identifier"][0]["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        pushed, identifiers,
        "the server has exactly the hub's Observations"
    );
    let reports = stored
        .keys()
        .filter(|k| k.starts_with("DiagnosticReport?"))
        .count();
    assert_eq!(reports as i64, records);
}
