//! Hub end to end with real components: the embedded broker (or Mosquitto at 127.0.0.1:1883),
//! PostgreSQL at 127.0.0.1:5432 (`EXAMLINK_TEST_PG` overrides), MQTT clients as devices.
//! Each test works in its own PostgreSQL schema and drops it.

mod util;

use std::path::PathBuf;

use hub::config::BrokerMode;
use hub::testkit;
use record::{DeviceId, ReceiptOutcome, Record, RecordId};
use util::{connect, connect_with, device, Broker, TestHub, TestSchema};

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_round_trip_device_to_postgres_to_receipt_and_results() {
    let schema = TestSchema::new("roundtrip");
    schema.migrate().await;
    let pw = schema.add_device("autoref-01", "autoref").await;
    let reader_pw = schema.add_device("dashboard", hub::auth::READER).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut reader = connect(
        &hub.broker(),
        "dashboard",
        Some(("dashboard", &reader_pw)),
        &["examlink/v1/results/#".to_owned()],
    )
    .await
    .expect("reader connects");
    let mut d = device(&hub, "autoref-01", &pw).await;

    let r = testkit::record(&dev("autoref-01"), 1);
    d.publish_record(&r).await;
    let receipt = d.receipt().await;
    assert_eq!(receipt.record_id, r.record_id);
    assert_eq!(receipt.outcome, ReceiptOutcome::Stored, "{receipt:?}");

    let (topic, payload) = reader.next().await.expect("live result");
    assert_eq!(topic, "examlink/v1/results/autoref/autoref-01");
    // The record as validated, plus its revision (1: as read).
    let mut live: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(live["revision"], 1);
    live.as_object_mut().unwrap().remove("revision");
    let live = serde_json::to_vec(&live).unwrap();
    assert_eq!(record::decode::<Record>(&live).unwrap(), r);

    let c = schema.client().await;
    let row = c
        .query_one(
            "SELECT device_id, patient_id, exam_date::text, payload->>'record_id' FROM records",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "autoref-01");
    assert_eq!(row.get::<_, Option<String>>(1), r.patient_id);
    assert_eq!(row.get::<_, String>(2), "2024-05-01");
    assert_eq!(row.get::<_, String>(3), r.record_id.as_str());
    assert_eq!(schema.count("SELECT count(*) FROM measurements").await, 18);
    let n: f64 = c
        .query_one("SELECT number FROM measurements WHERE field = 'r_k2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 43.25);

    // HTTP: health, API (as a reader), page, metrics.
    assert_eq!(hub.get("/healthz").await, (200, "ok".to_owned()));
    let pw = schema.add_user("rita", hub::users::UserRole::Reader).await;
    let token = hub.token("rita", &pw).await;
    let (status, body) = hub
        .get_as(&token, "/api/records?device_id=autoref-01&limit=10")
        .await;
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["record_id"], r.record_id.as_str());
    let (_, body) = hub.get_as(&token, "/api/records?patient_id=nobody").await;
    assert_eq!(body, "[]");
    assert_eq!(hub.get_as(&token, "/api/records?limit=0").await.0, 400);
    let (_, body) = hub.get_as(&token, "/api/devices").await;
    assert!(body.contains("\"device_id\":\"autoref-01\""), "{body}");
    let (_, page) = hub.get_as(&token, "/").await;
    assert!(
        page.contains("autoref-01") && page.contains("<table>"),
        "{page}"
    );
    let (_, metrics) = hub.get("/metrics").await;
    assert!(
        metrics.contains("examlink_hub_records_stored_total"),
        "{metrics}"
    );
    hub.stop().await;
}

// See: #14
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alignment_of_an_export_read_past_its_template_is_stored_with_the_record() {
    let schema = TestSchema::new("aligned");
    schema.migrate().await;
    let pw = schema.add_device("autoref-03", "autoref").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-03", &pw).await;
    let mut r = testkit::record(&dev("autoref-03"), 7);
    r.alignment = Some(record::Alignment {
        scale: 1.25,
        rotation_deg: -0.8,
        shift_px: [12.35, -3.0],
    });
    d.publish_record(&r).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    let row = schema
        .client()
        .await
        .query_one(
            "SELECT (payload->'alignment'->>'scale')::float8, \
                    (payload->'alignment'->>'rotation_deg')::float8 FROM records",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, f64>(0), row.get::<_, f64>(1)), (1.25, -0.8));
    hub.stop().await;
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_record_twice_is_stored_once_and_the_second_receipt_is_duplicate() {
    let schema = TestSchema::new("idem");
    schema.migrate().await;
    let pw = schema.add_device("autoref-02", "autoref").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-02", &pw).await;
    let r = testkit::record(&dev("autoref-02"), 5);
    d.publish_record(&r).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    d.publish_record(&r).await;
    let second = d.receipt().await;
    assert_eq!(
        (second.record_id.clone(), second.outcome),
        (r.record_id.clone(), ReceiptOutcome::Duplicate)
    );
    // Both in one batch too.
    let r2 = testkit::record(&dev("autoref-02"), 6);
    d.publish_record(&r2).await;
    d.publish_record(&r2).await;
    let mut outcomes = vec![d.receipt().await.outcome, d.receipt().await.outcome];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![ReceiptOutcome::Duplicate, ReceiptOutcome::Stored]
    );
    assert_eq!(schema.count("SELECT count(*) FROM records").await, 2);
    assert_eq!(schema.count("SELECT count(*) FROM measurements").await, 36);
    hub.stop().await;
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_and_logins_are_rejected_with_reasons_and_other_devices_are_unaffected() {
    let schema = TestSchema::new("bad");
    schema.migrate().await;
    let pw_a = schema.add_device("autoref-a", "autoref").await;
    let pw_b = schema.add_device("autoref-b", "autoref").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let broker = hub.broker();

    // Refused at CONNECT: wrong password, unknown device, client id ≠ username, no login.
    let refused = |r: Result<util::Client, String>| r.err().expect("refused");
    assert!(
        refused(connect(&broker, "autoref-a", Some(("autoref-a", "wrong")), &[]).await)
            .contains("BadUserNamePassword")
    );
    assert!(
        refused(connect(&broker, "ghost-1", Some(("ghost-1", &pw_a)), &[]).await)
            .contains("BadUserNamePassword")
    );
    assert!(
        refused(connect(&broker, "autoref-b", Some(("autoref-a", &pw_a)), &[]).await)
            .contains("BadClientId")
    );
    assert!(refused(connect(&broker, "autoref-a", None, &[]).await).contains("BadUserNamePassword"));

    let mut a = device(&hub, "autoref-a", &pw_a).await;
    let mut b = device(&hub, "autoref-b", &pw_b).await;
    let topic_a = "examlink/v1/devices/autoref-a/records";
    let good_a = testkit::record(&dev("autoref-a"), 1);

    a.publish(topic_a, b"{not json".to_vec()).await;
    let mut v: serde_json::Value = serde_json::from_slice(&record::encode(&good_a)).unwrap();
    v["schema_version"] = (record::SCHEMA_VERSION + 1).into();
    a.publish(topic_a, serde_json::to_vec(&v).unwrap()).await;
    let wrong_version_id = good_a.record_id.clone();
    let mut missing = testkit::record(&dev("autoref-a"), 2);
    missing.image_sha256 = "x".into();
    let mut v: serde_json::Value = serde_json::from_slice(&record::encode(&missing)).unwrap();
    v.as_object_mut().unwrap().remove("fields");
    a.publish(topic_a, serde_json::to_vec(&v).unwrap()).await;
    a.publish(topic_a, vec![b' '; 600_000]).await;
    let mut out_of_range = testkit::record(&dev("autoref-a"), 3);
    out_of_range.fields[17].value = Some("95".into());
    out_of_range.fields[17].number = Some(95.0);
    a.publish_record(&out_of_range).await;
    // A's payload claiming to be B, on A's topic; and A publishing under B's topic.
    let as_b = testkit::record(&dev("autoref-b"), 4);
    a.publish(topic_a, record::encode(&as_b)).await;
    a.publish(
        "examlink/v1/devices/autoref-b/records",
        record::encode(&as_b),
    )
    .await;
    // Meanwhile B is fine.
    let good_b = testkit::record(&dev("autoref-b"), 9);
    b.publish_record(&good_b).await;
    let rb = b.receipt().await;
    assert_eq!(
        (rb.record_id, rb.outcome),
        (good_b.record_id.clone(), ReceiptOutcome::Stored)
    );

    let n = schema.wait_count("SELECT count(*) FROM rejects", 6).await;
    assert_eq!(n, 6);
    // A newer schema version is not refused: the hub cannot take it *yet*.
    let deferred = format!(
        "SELECT count(*) FROM deferrals WHERE code = 'schema_version_newer' AND record_id = '{wrong_version_id}'"
    );
    assert_eq!(schema.wait_count(&deferred, 1).await, 1);
    let c = schema.client().await;
    let codes: Vec<String> = c
        .query("SELECT code FROM rejects ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "device_mismatch",
            "forbidden",
            "invalid_json",
            "schema",
            "too_large",
            "value"
        ],
        "{codes:?}"
    );
    let reason: String = c
        .query_one("SELECT reason FROM rejects WHERE code = 'value'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.contains("pd") && reason.contains("range"),
        "{reason}"
    );
    let (size, kept): (i32, i32) = c
        .query_one(
            "SELECT payload_size, length(payload) FROM rejects WHERE code = 'too_large'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    // Kept up to the codec's limit (by default the whole of any payload that could be stored).
    assert_eq!((size, kept), (600_000, 524_288));
    let forbidden: (Option<String>, String) = c
        .query_one(
            "SELECT device_id, topic FROM rejects WHERE code = 'forbidden'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        forbidden,
        (
            Some("autoref-a".into()),
            "examlink/v1/devices/autoref-b/records".into()
        )
    );

    // Rejected receipts go to A for every reject that carried a record id, and a deferred one
    // for the newer schema; B got none of them.
    let mut rejected = Vec::new();
    let mut deferred = Vec::new();
    while rejected.len() + deferred.len() < 5 {
        let r = a.receipt().await;
        match r.outcome {
            ReceiptOutcome::Rejected => rejected.push(r.record_id),
            ReceiptOutcome::Deferred => deferred.push(r.record_id),
            _ => panic!("{r:?}"),
        }
    }
    assert_eq!(deferred, vec![wrong_version_id.clone()]);
    assert!(rejected.contains(&out_of_range.record_id));
    assert!(rejected.contains(&as_b.record_id));
    assert_eq!(schema.count("SELECT count(*) FROM records").await, 1);
    assert!(b.incoming.try_recv().is_err(), "B saw nothing else");
    hub.stop().await;
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_two_hubs_sharing_a_subscription_store_every_record_once() {
    // Mosquitto on 127.0.0.1:1883 is part of the test setup (scripts/setup starts it): its
    // absence fails the test, it does not skip it.
    assert!(
        tokio::net::TcpStream::connect("127.0.0.1:1883")
            .await
            .is_ok(),
        "no MQTT broker at 127.0.0.1:1883: run scripts/setup"
    );
    let schema = TestSchema::new("ext");
    schema.migrate().await;
    let tag: u32 = rand::random::<u32>() % 100_000;
    let group = format!("hubtest{tag}");
    let devices: Vec<String> = (0..4).map(|i| format!("ext{tag}-{i}")).collect();
    for d in &devices {
        schema.add_device(d, "autoref").await;
    }
    let h1 = TestHub::start(&schema, BrokerMode::External, &group).await;
    let h2 = TestHub::start(&schema, BrokerMode::External, &group).await;
    let per_device = 50u64;
    let mut clients = Vec::new();
    for d in &devices {
        let receipts = record::topic::DeviceTopic::Receipts.topic(&dev(d));
        clients.push(
            connect(&Broker::plain(1883), d, None, &[receipts])
                .await
                .expect("mosquitto"),
        );
    }
    for (d, c) in devices.iter().zip(&clients) {
        for n in 0..per_device {
            c.publish_record(&testkit::record(&dev(d), n)).await;
        }
    }
    // An unregistered device is deferred (it may be registered later), not stored. (Checked
    // in the database: the shared broker may carry other subscribers' receipts.)
    let ghost = format!("ghost{tag}");
    let g = connect(&Broker::plain(1883), &ghost, None, &[])
        .await
        .unwrap();
    g.publish_record(&testkit::record(&dev(&ghost), 1)).await;

    let total = devices.len() as i64 * per_device as i64;
    let stored = schema
        .wait_count("SELECT count(*) FROM records", total)
        .await;
    assert_eq!(stored, total);
    schema
        .assert_record_ids(
            devices
                .iter()
                .flat_map(|d| (0..per_device).map(move |n| testkit::record(&dev(d), n).record_id)),
        )
        .await;
    assert_eq!(
        schema.count("SELECT count(*) FROM measurements").await,
        total * 18
    );
    let unknown = format!(
        "SELECT count(*) FROM deferrals WHERE code = 'unknown_device' AND device_id = '{ghost}'"
    );
    assert_eq!(schema.wait_count(&unknown, 1).await, 1);
    assert_eq!(
        schema
            .count("SELECT count(*) FROM records WHERE device_id LIKE 'ghost%'")
            .await,
        0
    );
    // Every record got a Stored receipt.
    for (d, c) in devices.iter().zip(&mut clients) {
        let mut want: std::collections::HashSet<_> = (0..per_device)
            .map(|n| testkit::record(&dev(d), n).record_id)
            .collect();
        while !want.is_empty() {
            let r = c.receipt().await;
            if r.outcome == ReceiptOutcome::Stored {
                want.remove(&r.record_id);
            }
        }
    }
    h1.stop().await;
    h2.stop().await;
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_mid_stream_and_restarted_stores_every_record_exactly_once() {
    let schema = TestSchema::new("crash");
    schema.migrate().await;
    let id = "crash-01";
    let pw = schema.add_device(id, "autoref").await;
    let dir = tempfile::tempdir().unwrap();
    testkit::write_templates(dir.path()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "templates_dir = {:?}\n[subscribe.embedded]\nlisten = \"127.0.0.1:{port}\"\n\
             [load]\nurl = {:?}\nschema = \"{}\"\n[http]\nlisten = \"\"\n\
             [tls]\ngenerate_dir = {:?}\n",
            dir.path(),
            util::pg_url(),
            schema.name,
            etc.path().join("tls"),
        ),
    )
    .unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .spawn()
            .expect("hub binary starts")
    };
    let records: Vec<Record> = (0..300).map(|n| testkit::record(&dev(id), n)).collect();
    let receipts = record::topic::DeviceTopic::Receipts.topic(&dev(id));
    let connect_device = || async {
        let ca = etc.path().join("tls/ca.pem");
        for _ in 0..600 {
            // The hub writes its CA file at its first start.
            if !ca.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            if let Ok(c) = connect(
                &Broker::tls(port, &ca),
                id,
                Some((id, &pw)),
                std::slice::from_ref(&receipts),
            )
            .await
            {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("hub never accepted the device");
    };

    let mut hub = spawn();
    let mut d = connect_device().await;
    let mut receipted = std::collections::HashSet::new();
    for r in &records {
        d.publish_record(r).await;
        while let Ok((_, p)) = d.incoming.try_recv() {
            receipted.insert(record::decode::<record::Receipt>(&p).unwrap().record_id);
        }
        if receipted.len() >= 60 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    hub.kill().await.unwrap(); // SIGKILL
    drop(d);

    let _restarted = spawn();
    // The agent's outbox: resend whatever has no receipt until everything has one.
    let mut d = connect_device().await;
    let deadline = tokio::time::Instant::now() + util::PATIENCE;
    while receipted.len() < records.len() && tokio::time::Instant::now() < deadline {
        for r in records.iter().filter(|r| !receipted.contains(&r.record_id)) {
            d.publish_record(r).await;
        }
        let round = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while let Ok(Some((_, p))) = tokio::time::timeout_at(round, d.incoming.recv()).await {
            let receipt: record::Receipt = record::decode(&p).unwrap();
            assert_ne!(receipt.outcome, ReceiptOutcome::Rejected, "{receipt:?}");
            receipted.insert(receipt.record_id);
        }
    }
    assert_eq!(receipted.len(), records.len());
    assert_eq!(schema.count("SELECT count(*) FROM records").await, 300);
    schema
        .assert_record_ids(records.iter().map(|r| r.record_id.clone()))
        .await;
    assert_eq!(
        schema.count("SELECT count(*) FROM measurements").await,
        300 * 18
    );
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_takes_devices_over_mqtts_and_refuses_plain_mqtt() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(certs.path());

    let schema = TestSchema::new("tls");
    schema.migrate().await;
    let pw = schema.add_device("autoref-01", "autoref").await;
    let (c2, k2) = (cert.clone(), key.clone());
    let hub = TestHub::start_with(&schema, BrokerMode::Embedded, "unused", move |c| {
        c.tls.cert_file = Some(c2);
        c.tls.key_file = Some(k2);
    })
    .await;
    let port = hub.mqtt.unwrap().port();

    // mqtts://localhost, trusting the CA that signed the hub's certificate.
    let mut o = rumqttc::MqttOptions::new("autoref-01", "localhost", port);
    o.set_credentials("autoref-01", &pw);
    o.set_transport(rumqttc::Transport::tls(
        std::fs::read(&ca).unwrap(),
        None,
        None,
    ));
    let receipts = record::topic::DeviceTopic::Receipts.topic(&dev("autoref-01"));
    let mut d = connect_with(o, &[receipts])
        .await
        .expect("device connects over TLS");
    let r = testkit::record(&dev("autoref-01"), 7);
    d.publish_record(&r).await;
    let receipt = d.receipt().await;
    assert_eq!(receipt.outcome, ReceiptOutcome::Stored, "{receipt:?}");
    assert_eq!(schema.count("SELECT count(*) FROM records").await, 1);

    // Plain MQTT on the TLS port gets no CONNACK.
    let plain = connect(
        &Broker::plain(port),
        "autoref-01",
        Some(("autoref-01", &pw)),
        &[],
    )
    .await;
    assert!(
        plain.is_err(),
        "plain MQTT must not be accepted on the TLS listener"
    );
    hub.stop().await;
}

/// A throwaway CA and a server certificate it signed for localhost / 127.0.0.1, made with the
/// `openssl` command: (CA certificate, server certificate, server key).
fn tls_files(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=examlink test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

// See: #4, #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_notice_is_stored_once_and_receipted_so_the_agent_can_retire_it() {
    let schema = TestSchema::new("rejnotice");
    schema.migrate().await;
    let pw = schema.add_device("tonometer-01", "tonometer").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "tonometer-01", &pw).await;
    let rejection = record::Rejection {
        device_id: dev("tonometer-01"),
        source_file: "tonometer_000123.jpg".into(),
        file_sha256: "ab".repeat(32),
        code: "unknown_layout".into(),
        reason: "no template of size 10x10".into(),
        quarantined_as: "quarantine/tonometer_000123.jpg".into(),
        at: chrono::Utc::now(),
    };
    let topic = record::topic::DeviceTopic::Rejections.topic(&dev("tonometer-01"));
    for want in [ReceiptOutcome::Stored, ReceiptOutcome::Duplicate] {
        d.publish(&topic, record::encode(&rejection)).await;
        let receipt = d.receipt().await;
        assert_eq!(receipt.record_id, rejection.receipt_id());
        assert_eq!(receipt.outcome, want);
    }
    assert_eq!(
        schema.count("SELECT count(*) FROM device_rejections").await,
        1
    );
    assert_eq!(schema.count("SELECT count(*) FROM records").await, 0);
    hub.stop().await;
}

// See: #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_closes_its_open_session() {
    let schema = TestSchema::new("revoke");
    schema.migrate().await;
    let pw = schema.add_device("autoref-01", "autoref").await;
    let hub = TestHub::start_with(&schema, BrokerMode::Embedded, "unused", |c| {
        c.subscribe.embedded.recheck_login_secs = 1;
    })
    .await;
    let mut d = device(&hub, "autoref-01", &pw).await;
    let r = testkit::record(&dev("autoref-01"), 1);
    d.publish_record(&r).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);

    hub::auth::revoke_device(&schema.client().await, "cli:test", &dev("autoref-01"))
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..50 {
        let (_, metrics) = hub.get("/metrics").await;
        if metrics.contains("code=\"revoked\"") {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        closed,
        "the open session was not closed after the revocation"
    );
    let again = connect(&hub.broker(), "autoref-01", Some(("autoref-01", &pw)), &[]).await;
    assert!(again.is_err(), "a revoked device must not log in again");
    hub.stop().await;
}

// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reread_under_a_new_template_version_supersedes_the_earlier_record() {
    let schema = TestSchema::new("reread");
    schema.migrate().await;
    let pw = schema.add_device("autoref-07", "autoref").await;
    // The hub has seen the next version of the test template before (another hub, an earlier
    // run): it is in template_versions, not in this hub's folder.
    let current = testkit::template_set()
        .get(testkit::TEMPLATE_ID)
        .unwrap()
        .version;
    let next = testkit::template_toml().replacen(
        &format!("version = {current}"),
        &format!("version = {}", current + 1),
        1,
    );
    schema
        .client()
        .await
        .execute(
            "INSERT INTO template_versions (template_id, version, device_type, firmware, body, body_sha256) \
             VALUES ($1, $2, 'autoref', 'fw2', $3, 'x')",
            &[&testkit::TEMPLATE_ID, &((current + 1) as i32), &next],
        )
        .await
        .unwrap();
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-07", &pw).await;
    let first = testkit::record(&dev("autoref-07"), 3);
    d.publish_record(&first).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    // The same export read again under the newer version: a new record id, linked.
    let mut again = first.clone();
    again.template_version = current + 1;
    again.record_id = RecordId::derive(
        &again.device_id,
        &again.image_sha256,
        &again.template_id,
        again.template_version,
    );
    d.publish_record(&again).await;
    let r = d.receipt().await;
    assert_eq!(
        (r.record_id, r.outcome),
        (again.record_id.clone(), ReceiptOutcome::Stored)
    );
    let c = schema.client().await;
    let row = c
        .query_one(
            "SELECT o.superseded_by, n.supersedes FROM records o, records n \
             WHERE o.record_id = $1 AND n.record_id = $2",
            &[&first.record_id.as_str(), &again.record_id.as_str()],
        )
        .await
        .unwrap();
    let (by, sup): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(by.as_deref(), Some(again.record_id.as_str()));
    assert_eq!(sup.as_deref(), Some(first.record_id.as_str()));
    // The API answers with the current revision only.
    let rpw = schema.add_user("rhea", hub::users::UserRole::Reader).await;
    let token = hub.token("rhea", &rpw).await;
    let (_, body) = hub
        .get_as(&token, "/api/records?device_id=autoref-07")
        .await;
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(rows[0]["record_id"], again.record_id.as_str());
    assert_eq!(rows[0]["supersedes"], first.record_id.as_str());
    hub.stop().await;
}

// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_device_messages_are_kept_as_rejects_and_never_stall_the_others() {
    let schema = TestSchema::new("poison");
    schema.migrate().await;
    let pw_p = schema.add_device("autoref-p", "autoref").await;
    let pw_q = schema.add_device("autoref-q", "autoref").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut p = device(&hub, "autoref-p", &pw_p).await;
    let mut q = device(&hub, "autoref-q", &pw_q).await;
    let rejection = serde_json::json!({
        "schema_version": 1, "device_id": "autoref-p", "source_file": "x.png",
        "file_sha256": "a".repeat(12_000), "code": "unknown_layout", "reason": "r",
        "quarantined_as": "q/x.png", "at": "2026-12-01T00:00:00Z"
    });
    p.publish(
        "examlink/v1/devices/autoref-p/rejections",
        serde_json::to_vec(&rejection).unwrap(),
    )
    .await;
    let status = serde_json::json!({
        "schema_version": 1, "device_id": "autoref-p", "online": true,
        "agent_version": "v".repeat(10_000), "backlog": 0, "exports": 0, "delivered": 0,
        "rejected": 0, "at": "9999-01-01T00:00:00Z"
    });
    p.publish(
        "examlink/v1/devices/autoref-p/status",
        serde_json::to_vec(&status).unwrap(),
    )
    .await;
    // The poison rejection gets a rejected receipt, so its agent stops resending it.
    let r = p.receipt().await;
    assert_eq!(r.outcome, ReceiptOutcome::Rejected, "{r:?}");
    assert!(r.reason.unwrap().starts_with("rejection_field"));
    // Another device's status and records keep flowing.
    let good = serde_json::json!({
        "schema_version": 1, "device_id": "autoref-q", "online": true,
        "agent_version": "0.1.0", "backlog": 0, "exports": 1, "delivered": 0,
        "rejected": 0, "at": chrono::Utc::now()
    });
    q.publish(
        "examlink/v1/devices/autoref-q/status",
        serde_json::to_vec(&good).unwrap(),
    )
    .await;
    let rec = testkit::record(&dev("autoref-q"), 1);
    q.publish_record(&rec).await;
    assert_eq!(q.receipt().await.outcome, ReceiptOutcome::Stored);
    assert_eq!(
        schema
            .wait_count("SELECT count(*) FROM devices WHERE device_id = 'autoref-q' AND status_at IS NOT NULL", 1)
            .await,
        1
    );
    assert_eq!(
        schema
            .wait_count("SELECT count(*) FROM rejects WHERE device_id = 'autoref-p' AND code IN ('rejection_field', 'status_field')", 2)
            .await,
        2
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM devices WHERE device_id = 'autoref-p' AND status_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(hub.get("/healthz").await, (200, "ok".to_owned()));
    hub.stop().await;
}
