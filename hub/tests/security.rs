//! Every door locked (#12), tried with real components: the hub in-process (TLS as out of the
//! box), real PostgreSQL, real MQTT clients, HTTPS requests. Each test works in its own schema.

mod util;

use std::time::Duration;

use hub::config::BrokerMode;
use hub::testkit;
use hub::users::UserRole;
use record::{DeviceId, ReceiptOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use util::{connect, device, form, Broker, TestHub, TestSchema};

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_get_401_and_only_health_and_metrics_stay_open() {
    let schema = TestSchema::new("noauth");
    schema.migrate().await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    for path in [
        "/api/records",
        "/api/records?patient_id=00000001",
        "/api/devices",
        "/api/audit",
        "/",
    ] {
        let r = hub.request("GET", path, &[], "").await;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.header("www-authenticate").is_some(), "{path}");
        let (status, _) = hub.get_as("not-a-token", path).await;
        assert_eq!(status, 401, "{path} with a made-up token");
        let r = hub
            .request("GET", path, &[("Cookie", "examlink_session=made-up")], "")
            .await;
        assert_eq!(r.status, 401, "{path} with a made-up cookie");
    }
    let r = hub
        .request("POST", "/api/devices", &[FORM], "id=x-1&type=autoref")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(hub.get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(hub.get("/metrics").await.0, 200);
    assert_eq!(hub.get("/login").await.0, 200);
    hub.stop().await;
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_a_login_may_do_and_every_read_and_change_is_audited() {
    let schema = TestSchema::new("roles");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-01", "autoref").await;
    let rita = schema.add_user("rita", UserRole::Reader).await;
    let vera = schema.add_user("vera", UserRole::Reviewer).await;
    let ada = schema.add_user("ada", UserRole::Admin).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-01", &pw_dev).await;
    for n in 0..3 {
        d.publish_record(&testkit::record(&dev("autoref-01"), n))
            .await;
        assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    }

    // A reader reads; the read is audited with the query and the count.
    let reader = hub.token("rita", &rita).await;
    let (status, body) = hub
        .get_as(&reader, "/api/records?device_id=autoref-01&limit=2")
        .await;
    assert_eq!(status, 200, "{body}");
    let row = schema
        .client()
        .await
        .query_one(
            "SELECT actor, detail FROM audit WHERE action = 'records.read'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "rita");
    let detail: serde_json::Value = row.get(1);
    assert_eq!(detail["count"], 2, "{detail}");
    assert_eq!(detail["query"]["device_id"], "autoref-01", "{detail}");
    assert_eq!(detail["query"]["limit"], 2, "{detail}");

    // Neither a reader nor a reviewer may add devices or read the audit trail.
    for (who, token) in [("rita", &reader), ("vera", &hub.token("vera", &vera).await)] {
        let auth = format!("Bearer {token}");
        let headers = [FORM, ("Authorization", auth.as_str())];
        let r = hub
            .request("POST", "/api/devices", &headers, "id=rogue-01&type=autoref")
            .await;
        assert_eq!(r.status, 403, "{who}: {}", r.body);
        assert_eq!(hub.get_as(token, "/api/audit").await.0, 403, "{who}");
    }
    assert_eq!(
        schema
            .count("SELECT count(*) FROM devices WHERE device_id = 'rogue-01'")
            .await,
        0
    );

    // An admin adds a device over the API; the device logs in with the printed password.
    let admin = hub.token("ada", &ada).await;
    let auth = format!("Bearer {admin}");
    let r = hub
        .request(
            "POST",
            "/api/devices",
            &[FORM, ("Authorization", auth.as_str())],
            "id=tonometer-07&type=tonometer",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let c = connect(
        &hub.broker(),
        "tonometer-07",
        Some(("tonometer-07", r.body.trim())),
        &[],
    )
    .await;
    assert!(c.is_ok(), "the new device logs in: {:?}", c.err());
    let (status, trail) = hub.get_as(&admin, "/api/audit?limit=100").await;
    assert_eq!(status, 200);
    let trail: Vec<serde_json::Value> = serde_json::from_str(&trail).unwrap();
    let actions: Vec<(String, String)> = trail
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("cli:test", "device.add"),
        ("cli:test", "user.add"),
        ("rita", "login"),
        ("rita", "records.read"),
        ("ada", "device.add"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b)| (a.as_str(), b.as_str()) == want),
            "{want:?} missing from {actions:?}"
        );
    }
    hub.stop().await;
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sessions_need_their_csrf_token_and_end_when_the_user_is_revoked() {
    let schema = TestSchema::new("session");
    schema.migrate().await;
    let ada = schema.add_user("ada", UserRole::Admin).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;

    let bad = hub.login("/login", "ada", "wrong password").await;
    assert_eq!(bad.status, 401);
    let r = hub.login("/login", "ada", &ada).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = hub.request("GET", "/", &[("Cookie", &cookie)], "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries the CSRF token")
        .to_owned();

    // A change from the page session without (or with a wrong) CSRF token is refused.
    let add = |body: String, extra: Option<(&'static str, String)>| {
        let cookie = cookie.clone();
        let hub = &hub;
        async move {
            let mut headers = vec![FORM, ("Cookie", cookie.as_str())];
            if let Some((k, v)) = &extra {
                headers.push((*k, v.as_str()));
            }
            hub.request("POST", "/api/devices", &headers, &body).await
        }
    };
    let r = add("id=dev-a&type=autoref".into(), None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = add(
        form(&[("id", "dev-a"), ("type", "autoref"), ("csrf", "nope")]),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = add(
        form(&[("id", "dev-a"), ("type", "autoref"), ("csrf", &csrf)]),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = add(
        "id=dev-b&type=autoref".into(),
        Some(("X-CSRF-Token", csrf.clone())),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Revoking the user ends the page session and the API token at once.
    let token = hub.token("ada", &ada).await;
    assert_eq!(hub.get_as(&token, "/api/devices").await.0, 200);
    hub::users::revoke_user(&schema.client().await, "cli:test", "ada")
        .await
        .unwrap();
    let page = hub.request("GET", "/", &[("Cookie", &cookie)], "").await;
    assert_eq!(page.status, 401, "revoked user's page session");
    assert_eq!(hub.get_as(&token, "/api/devices").await.0, 401);
    assert_eq!(hub.login("/api/token", "ada", &ada).await.status, 401);

    // Rotating gives a new password; the old sessions stay void.
    let new = hub::users::rotate_user(&schema.client().await, "cli:test", "ada", None)
        .await
        .unwrap();
    assert_eq!(hub.get_as(&token, "/api/devices").await.0, 401);
    let fresh = hub.token("ada", new.expose()).await;
    assert_eq!(hub.get_as(&fresh, "/api/devices").await.0, 200);
    // Logout ends a token.
    let auth = format!("Bearer {fresh}");
    let r = hub
        .request("POST", "/api/logout", &[("Authorization", &auth)], "")
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hub.get_as(&fresh, "/api/devices").await.0, 401);
    hub.stop().await;
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_reads_neither_other_devices_results_nor_the_http_api() {
    let schema = TestSchema::new("devscope");
    schema.migrate().await;
    let pw_a = schema.add_device("autoref-a", "autoref").await;
    let pw_b = schema.add_device("autoref-b", "autoref").await;
    let pw_r = schema.add_device("dash", hub::auth::READER).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let broker = hub.broker();
    let results = "examlink/v1/results/#".to_owned();
    let receipts_b = record::topic::DeviceTopic::Receipts.topic(&dev("autoref-b"));
    // Device a asks for everyone's results and b's receipts: SUBACK failure, nothing arrives.
    let mut a = connect(
        &broker,
        "autoref-a",
        Some(("autoref-a", &pw_a)),
        &[results.clone(), receipts_b],
    )
    .await
    .unwrap();
    let mut reader = connect(&broker, "dash", Some(("dash", &pw_r)), &[results])
        .await
        .unwrap();
    let mut b = device(&hub, "autoref-b", &pw_b).await;
    b.publish_record(&testkit::record(&dev("autoref-b"), 1))
        .await;
    assert_eq!(b.receipt().await.outcome, ReceiptOutcome::Stored);
    let (topic, _) = reader.next().await.expect("the reader gets the result");
    assert_eq!(topic, "examlink/v1/results/autoref/autoref-b");
    let leaked = tokio::time::timeout(Duration::from_secs(2), a.incoming.recv()).await;
    assert!(leaked.is_err(), "device a received {leaked:?}");

    // A device's password opens no HTTP door.
    assert_eq!(hub.get_as(&pw_a, "/api/records").await.0, 401);
    assert_eq!(
        hub.login("/api/token", "autoref-a", &pw_a).await.status,
        401
    );
    hub.stop().await;
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_unless_allowed() {
    let schema = TestSchema::new("plain");
    schema.migrate().await;
    let pw = schema.add_device("autoref-01", "autoref").await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    assert!(hub.ca_file.is_some(), "TLS by default, with a generated CA");
    let port = hub.mqtt.unwrap().port();
    let plain = connect(
        &Broker::plain(port),
        "autoref-01",
        Some(("autoref-01", &pw)),
        &[],
    )
    .await;
    assert!(
        plain.is_err(),
        "plain MQTT accepted on the default listener"
    );
    let r = util::http_request(hub.http.unwrap(), None, "GET", "/healthz", &[], "").await;
    assert_ne!(r.status, 200, "plain HTTP answered: {r:?}");
    // A certificate from another CA is refused by the client (the hub's name does not chain).
    let other = tempfile::tempdir().unwrap();
    hub::tls::generate(other.path(), &[]).unwrap();
    let foreign = Broker::tls(port, &other.path().join(hub::tls::CA_FILE));
    let r = connect(&foreign, "autoref-01", Some(("autoref-01", &pw)), &[]).await;
    assert!(r.is_err(), "a client trusting another CA connected");
    assert!(
        connect(&hub.broker(), "autoref-01", Some(("autoref-01", &pw)), &[])
            .await
            .is_ok()
    );
    hub.stop().await;

    let open = TestHub::start_with(&schema, BrokerMode::Embedded, "unused", |c| {
        c.tls.allow_plaintext = true;
    })
    .await;
    assert!(open.ca_file.is_none());
    let c = connect(
        &Broker::plain(open.mqtt.unwrap().port()),
        "autoref-01",
        Some(("autoref-01", &pw)),
        &[],
    )
    .await;
    assert!(
        c.is_ok(),
        "allow_plaintext: plain MQTT works: {:?}",
        c.err()
    );
    assert_eq!(open.get("/healthz").await.0, 200);
    open.stop().await;
}

/// A TLS connection to the hub's device listener, trusting its CA.
async fn tls_stream(hub: &TestHub) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(hub.mqtt.unwrap())
        .await
        .unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    util::tls_connector(hub.ca_file.as_ref().unwrap())
        .connect(name, tcp)
        .await
        .unwrap()
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_connect_is_refused_from_its_header_and_addresses_are_capped() {
    let schema = TestSchema::new("bigconnect");
    schema.migrate().await;
    let hub = TestHub::start_with(&schema, BrokerMode::Embedded, "unused", |c| {
        c.guard.max_connections_per_address = 3;
    })
    .await;
    // CONNECT claiming 1 MiB - 1: the hub hangs up after the header, without waiting for it.
    let mut s = tls_stream(&hub).await;
    s.write_all(&[0x10, 0xFF, 0xFF, 0x3F]).await.unwrap();
    s.write_all(&[0u8; 1024]).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(util::PATIENCE, s.read(&mut buf))
        .await
        .expect("the hub closes the connection");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // Three silent connections from 127.0.0.1 are kept; a fourth is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tokio::net::TcpStream::connect(hub.mqtt.unwrap())
                .await
                .unwrap(),
        );
    }
    let mut fourth = tokio::net::TcpStream::connect(hub.mqtt.unwrap())
        .await
        .unwrap();
    let n = tokio::time::timeout(util::PATIENCE, fourth.read(&mut buf))
        .await
        .expect("the fourth is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(held.pop());
    // A freed slot is usable again (poll: the hub notices the close asynchronously).
    let mut ok = false;
    for _ in 0..100 {
        let mut again = tokio::net::TcpStream::connect(hub.mqtt.unwrap())
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(300), again.read(&mut buf))
            .await
            .is_err()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "a closed connection's slot was not given back");
    hub.stop().await;
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_address() {
    let schema = TestSchema::new("backoff");
    schema.migrate().await;
    let pw = schema.add_device("autoref-01", "autoref").await;
    let ada = schema.add_user("ada", UserRole::Admin).await;
    let hub = TestHub::start_with(&schema, BrokerMode::Embedded, "unused", |c| {
        c.guard.failures_before_backoff = 3;
        c.guard.backoff_initial_ms = 1500;
        c.guard.backoff_max_secs = 3;
    })
    .await;
    let broker = hub.broker();
    for _ in 0..3 {
        let r = connect(&broker, "autoref-01", Some(("autoref-01", "wrong")), &[]).await;
        assert!(r.err().expect("refused").contains("BadUserNamePassword"));
    }
    // Backing off: even the right password is refused, without hashing.
    let r = connect(&broker, "autoref-01", Some(("autoref-01", &pw)), &[]).await;
    assert!(r.err().expect("refused").contains("NotAuthorized"));
    // HTTP shares the address's record.
    let r = hub.login("/api/token", "ada", &ada).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // After the wait, the right password works again and clears the count.
    let mut logged_in = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if connect(&broker, "autoref-01", Some(("autoref-01", &pw)), &[])
            .await
            .is_ok()
        {
            logged_in = true;
            break;
        }
    }
    assert!(logged_in, "the backoff never ended");
    assert_eq!(hub.login("/api/token", "ada", &ada).await.status, 200);
    hub.stop().await;
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_a_hash_like_wrong_passwords() {
    let schema = TestSchema::new("dummy");
    schema.migrate().await;
    schema.add_device("autoref-01", "autoref").await;
    let target = hub::load::PgTarget::new(&{
        let mut l = hub::config::HubConfig::default().load;
        l.url = util::pg_url();
        l.schema = schema.name.clone();
        l
    })
    .unwrap();
    let guard = hub::guard::Guard::new(Default::default());
    let creds = hub::auth::Credentials::new(
        std::sync::Arc::new(hub::load::Db::new(target)),
        guard.clone(),
    );
    let before = guard.hashes_run();
    assert!(creds.verify("autoref-01", "wrong").await.is_err());
    assert_eq!(guard.hashes_run(), before + 1, "wrong password: one hash");
    assert!(creds.verify("ghost-99", "whatever").await.is_err());
    assert_eq!(guard.hashes_run(), before + 2, "unknown user: one hash too");
    assert!(creds.verify("Not A Device!", "x").await.is_err());
    assert_eq!(
        guard.hashes_run(),
        before + 3,
        "malformed name: one hash too"
    );
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_append_only() {
    let schema = TestSchema::new("auditro");
    schema.migrate().await;
    let c = schema.client().await;
    hub::audit::append(&c, "ada", "test.append", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit SET actor = 'mallory'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert!(
            format!("{e:?}").contains("append-only"),
            "{sql} was not refused: {e:?}"
        );
    }
    let entries = hub::audit::list(&c, &Default::default()).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].actor.as_str(), entries[0].action.as_str()),
        ("ada", "test.append")
    );
}

// See: #12, #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_reviewers_resolve_review_items_and_each_decision_is_checked_kept_and_audited() {
    let schema = TestSchema::new("review");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-03", "autoref").await;
    let rita = schema.add_user("rita", UserRole::Reader).await;
    let vera = schema.add_user("vera", UserRole::Reviewer).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-03", &pw_dev).await;
    // A record whose r_cyl (field 4) and pd (field 17) the reader could not read.
    let mut r = testkit::record(&dev("autoref-03"), 1);
    let cyl = r.fields[4].value.clone().unwrap();
    for i in [4, 17] {
        r.fields[i].status = record::FieldStatus::Unreadable;
        r.fields[i].raw = r.fields[i].value.take();
        r.fields[i].number = None;
        r.fields[i].reason = Some("low confidence".into());
    }
    d.publish_record(&r).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    let id = r.record_id.as_str();

    // A reader may neither see the queue nor resolve.
    let reader = format!("Bearer {}", hub.token("rita", &rita).await);
    let as_reader = [FORM, ("Authorization", reader.as_str())];
    let body = form(&[("record_id", id), ("field", "r_cyl"), ("value", &cyl)]);
    let resp = hub.request("POST", "/api/review", &as_reader, &body).await;
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert_eq!(
        hub.request("GET", "/api/review", &as_reader, "")
            .await
            .status,
        403
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM review_queue WHERE resolved_at IS NOT NULL")
            .await,
        0
    );

    // A reviewer sees both items, the surgical value (none here) and identity first.
    let token = hub.token("vera", &vera).await;
    let reviewer = format!("Bearer {token}");
    let as_reviewer = [FORM, ("Authorization", reviewer.as_str())];
    let (status, queue) = hub.get_as(&token, "/api/review").await;
    assert_eq!(status, 200, "{queue}");
    let items: serde_json::Value = serde_json::from_str(&queue).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 2, "{queue}");
    // A value outside the field's range is refused with the reason, and nothing changes.
    let bad = form(&[("record_id", id), ("field", "pd"), ("value", "95")]);
    let resp = hub.request("POST", "/api/review", &as_reviewer, &bad).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("pd"), "{}", resp.body);
    // The right values: one confirms what the reader read, one is absent on the export.
    let resp = hub
        .request("POST", "/api/review", &as_reviewer, &body)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.body.contains("\"verified\""), "{}", resp.body);
    let absent = form(&[("record_id", id), ("field", "pd"), ("action", "absent")]);
    let resp = hub
        .request("POST", "/api/review", &as_reviewer, &absent)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    // Twice is a conflict.
    let resp = hub
        .request("POST", "/api/review", &as_reviewer, &body)
        .await;
    assert_eq!(resp.status, 409, "{}", resp.body);

    let c = schema.client().await;
    let m = c
        .query_one(
            "SELECT value, status, reviewed_by FROM measurements WHERE record_id = $1 AND field = 'r_cyl'",
            &[&id],
        )
        .await
        .unwrap();
    let (value, status, by): (Option<String>, String, Option<String>) =
        (m.get(0), m.get(1), m.get(2));
    assert_eq!(
        (value.as_deref(), status.as_str(), by.as_deref()),
        (Some(cyl.as_str()), "verified", Some("vera"))
    );
    assert_eq!(
        schema
            .count(&format!(
                "SELECT revision::bigint FROM records WHERE record_id = '{id}'"
            ))
            .await,
        3,
        "two decisions, two new revisions"
    );
    assert_eq!(
        schema.count(&format!("SELECT count(*) FROM measurement_history WHERE record_id = '{id}' AND status = 'unreadable'")).await,
        2,
        "the reader's version is kept"
    );
    assert_eq!(
        schema.count("SELECT count(*) FROM review_queue WHERE resolved_at IS NOT NULL AND resolved_by = 'vera'").await,
        2
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM audit WHERE action = 'review.resolve' AND actor = 'vera'")
            .await,
        2
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM audit WHERE action = 'review.read' AND actor = 'vera'")
            .await,
        1
    );
    hub.stop().await;
}
