//! The review station in a real browser (#13): headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/setup`) driven over WebDriver, against a hub started
//! in-process with TLS, PostgreSQL and its embedded broker. A device publishes a record whose
//! `patient_id`, `pd` and `r_cyl` the reader could not read; a reviewer logs in and clears the
//! three items with the keyboard alone (Tab skips, a wrong value is refused in place, Enter
//! accepts). `patient_id` is double-keyed: her entry is blind (the reader's guess hidden) and
//! waits; a second reviewer's different entry is a mismatch, and a third reviewer's entry,
//! equal to hers, resolves it. The database then holds the values, statuses, revisions, blind
//! entries and audit rows.
//!
//! The page benchmark (`--ignored`, in `scripts/bench`): `GET /review` with 10,002 items queued,
//! p50/p95/p99 over 200 requests, next to `GET /healthz` (the same TLS request with no work) in
//! the same run:
//!
//! ```text
//! cargo test -p hub --release --test review_page -- --ignored --nocapture
//! ```
//!
//! `EXAMLINK_SCREENSHOTS=DIR` also writes the page's screenshots there (`review-item.png`,
//! `review-empty.png`; the README's come from this test).

mod util;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hub::config::BrokerMode;
use hub::testkit;
use hub::users::UserRole;
use record::{DeviceId, FieldStatus, ReceiptOutcome};
use util::{device, free_port, TestHub, TestSchema};

/// The `patient_id` of a real export (the development sample `autoref_fw2_001`) as an agent
/// sends it for review: its label, the field crop and the context crop with the field's box,
/// cut through the template's box and the export's fitted map as the agent cuts them. `None` only when the samples are
/// absent and `EXAMLINK_ALLOW_SKIP=1`.
fn sample_patient_crop() -> Option<(String, record::ReviewCrop)> {
    use base64::Engine;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let samples = std::env::var_os("EXAMLINK_SAMPLES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/devices"));
    let png = samples.join("autoref_fw2/autoref_fw2_001.png");
    if !png.exists() && std::env::var("EXAMLINK_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: the item's real crops (no samples at {})",
            samples.display()
        );
        return None;
    }
    let label: serde_json::Value = serde_json::from_slice(
        &std::fs::read(png.with_extension("json")).expect("the sample's label (EXAMLINK_SAMPLES)"),
    )
    .unwrap();
    let templates = record::TemplateSet::load_dir(&root.join("templates")).unwrap();
    let t = templates.get("autoref_fw2").unwrap();
    let bbox = t.field("patient_id").unwrap().bbox.map(|v| v as f32);
    let img = vision::GrayF32::from_image(&image::open(&png).expect("the sample decodes"));
    // The export's own alignment, as the agent fits it.
    let map = vision::Layouts::new(&templates)
        .unwrap()
        .identify(&img)
        .expect("the sample is identified")
        .map;
    let encode = |w: u32, h: u32, px: Vec<u8>| {
        let mut out = Vec::new();
        image::GrayImage::from_raw(w, h, px)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(out)
    };
    let (crop, _) = vision::normalise_crop(&img, &map, bbox);
    let crop = encode(
        vision::CROP_W as u32,
        vision::CROP_H as u32,
        vision::crop::to_u8(&crop),
    );
    let c = vision::context::context_crop(&img, &map, bbox, t.width, t.height);
    let context = record::ContextCrop {
        png_base64: encode(c.width, c.height, c.pixels),
        bbox: c.bbox,
    };
    let crop = record::ReviewCrop {
        field: "patient_id".into(),
        png_base64: crop,
        context: Some(context),
    };
    Some((
        label["fields"]["patient_id"].as_str().unwrap().to_owned(),
        crop,
    ))
}

/// A record of device `d` (number `n`) whose `patient_id`, `r_cyl` and `pd` were unreadable;
/// `patient_id` is a real export's, with its crops.
fn flagged(d: &DeviceId, n: u64) -> (record::Record, Vec<(String, String)>) {
    let mut r = testkit::record(d, n);
    if let Some((label, crop)) = sample_patient_crop() {
        r.fields[0].value = Some(label);
        r.review_crops.push(crop);
    }
    let mut truth = Vec::new();
    for i in [0, 4, 17] {
        let f = &mut r.fields[i];
        truth.push((f.name.clone(), f.value.clone().unwrap()));
        f.status = FieldStatus::Unreadable;
        f.raw = f.value.take();
        f.number = None;
        f.reason = Some("low confidence".into());
    }
    r.patient_id = None;
    (r, truth)
}

/// chromedriver, stopped when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _killed = self.0.kill();
        let _reaped = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (scripts/setup installs Debian's chromium-driver)");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver(child, port)
}

async fn browser(driver: &Driver) -> Client {
    let caps = serde_json::json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,900"],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("WebDriver session")
}

/// The text of the element `css`, or `None` when the page has none (or is being replaced: the
/// element found may be gone before its text is read).
async fn text(c: &Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

/// Types `keys` into the focused element (the page focuses the value box on load).
async fn type_keys(c: &Client, keys: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(keys)
        .await
        .unwrap();
}

/// Waits until the page shows `css` (a new page after a key press).
/// Logs in with the keyboard: the name, Tab, the password, Enter.
async fn log_in(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    type_keys(c, &format!("{name}\u{E004}{password}\u{E007}")).await;
}

async fn wait_for(c: &Client, css: &str, what: &str) {
    let t0 = Instant::now();
    while c.find(Locator::Css(css)).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "waiting for {what}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the element `css` reads `want` (the next page has loaded).
async fn wait_text(c: &Client, css: &str, want: &str) {
    let t0 = Instant::now();
    while text(c, css).await.as_deref() != Some(want) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "waiting for {css} = {want}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("EXAMLINK_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_clears_three_flagged_fields_by_keyboard_in_a_real_browser() {
    let schema = TestSchema::new("reviewpage");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-07", "autoref").await;
    let vera = schema.add_user("vera", UserRole::Reviewer).await;
    let walt = schema.add_user("walt", UserRole::Reviewer).await;
    let xena = schema.add_user("xena", UserRole::Reviewer).await;
    let viewer = schema.add_device("dashboard", hub::auth::READER).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut reader = live_reader(&hub, &viewer).await;
    let mut d = device(&hub, "autoref-07", &pw_dev).await;
    // patient_id (field 0), r_cyl (4) and pd (17) unreadable, with what the reader read.
    let (r, truth) = flagged(&DeviceId::new("autoref-07").unwrap(), 5);
    d.publish_record(&r).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    let id = r.record_id.as_str().to_owned();
    let value_of = |field: &str| {
        truth
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no item for {field}"))
    };

    let driver = chromedriver();
    let c = browser(&driver).await;
    let base = format!("https://localhost:{}", hub.http.unwrap().port());
    log_in(&c, &base, "vera", &vera).await;
    wait_for(&c, "#review", "the fleet page with the review link").await;
    c.goto(&format!("{base}/review")).await.unwrap();
    // Identity first, keyed blind: the reader's guess is not on the page.
    wait_text(&c, "#item", "patient_id").await;
    assert!(text(&c, "#blind").await.is_some());
    assert_eq!(text(&c, "#read").await, None);
    if !r.review_crops.is_empty() {
        // The field's crop, large, and the export around it with the box outlined.
        assert!(c.find(Locator::Css("img.crop")).await.is_ok());
        assert!(c.find(Locator::Css("#context svg rect")).await.is_ok());
    }
    shot(&c, "review-item.png").await;
    // Tab skips to the next item (pd, then r_cyl: same priority, by name).
    type_keys(&c, "\u{E004}").await;
    wait_text(&c, "#item", "pd").await;
    // A value out of range is refused in place, with the reason; nothing changes.
    type_keys(&c, "95\u{E007}").await;
    wait_for(&c, "#error", "the reason").await;
    assert!(text(&c, "#error").await.unwrap().contains("pd"));
    assert_eq!(
        schema
            .count("SELECT count(*) FROM review_queue WHERE resolved_at IS NOT NULL")
            .await,
        0
    );
    // Clear the box (Ctrl+A, Backspace), type the right value, Enter: the next item comes.
    type_keys(
        &c,
        &format!("\u{E009}a\u{E009}\u{E003}{}\u{E007}", value_of("pd")),
    )
    .await;
    wait_text(&c, "#item", "r_cyl").await;
    type_keys(&c, &format!("{}\u{E007}", value_of("r_cyl"))).await;
    // Past the end of the queue (patient_id was skipped): start again from the first.
    wait_for(&c, "#empty", "the end of the queue").await;
    c.goto(&format!("{base}/review")).await.unwrap();
    wait_text(&c, "#item", "patient_id").await;
    type_keys(&c, &format!("{}\u{E007}", value_of("patient_id"))).await;
    // Her entry waits for a second key; the item has left her queue.
    wait_for(&c, "#empty", "an empty queue").await;
    shot(&c, "review-empty.png").await;
    // The exam still has no patient: it is on the patients to match, its item awaiting a key.
    c.goto(&format!("{base}/review/patients")).await.unwrap();
    wait_for(&c, "#patients", "the patients to match").await;
    assert!(text(&c, &format!("tr[data-record=\"{id}\"]"))
        .await
        .unwrap()
        .contains("1 blind entry"));
    shot(&c, "review-patients.png").await;
    c.close().await.unwrap();
    let pending = "SELECT count(*) FROM review_queue WHERE resolved_at IS NULL";
    assert_eq!(
        schema.count(pending).await,
        1,
        "patient_id waits for a second key"
    );

    // A second reviewer keys another chart number: a mismatch, still pending. A third keys
    // the first one's value: two agree, resolved.
    let key = |who: &'static str, pw: &str, value: String| {
        let (hub, pw, id) = (&hub, pw.to_owned(), id.clone());
        async move {
            let token = hub.token(who, &pw).await;
            let auth = format!("Bearer {token}");
            let body = util::form(&[
                ("record_id", &id),
                ("field", "patient_id"),
                ("value", &value),
            ]);
            let headers = [
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", auth.as_str()),
            ];
            hub.request("POST", "/api/review", &headers, &body).await
        }
    };
    let r = key("walt", &walt, "12345678".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("mismatch_awaiting_third_key"), "{}", r.body);
    assert_eq!(schema.count(pending).await, 1);
    let r = key("walt", &walt, value_of("patient_id")).await;
    assert_eq!(r.status, 409, "one entry per reviewer: {}", r.body);
    let r = key("xena", &xena, value_of("patient_id")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"verified\""), "{}", r.body);
    assert_eq!(schema.count(pending).await, 0);

    // The database: values, statuses, revisions, audit rows, the patient found.
    let db = schema.client().await;
    for (field, want) in &truth {
        let row = db
            .query_one(
                "SELECT value, status, reviewed_by FROM measurements WHERE record_id = $1 AND field = $2",
                &[&id, field],
            )
            .await
            .unwrap();
        let (value, status, by): (Option<String>, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(value.as_deref(), Some(want.as_str()), "{field}");
        assert_eq!(status, "verified", "{field}: the reader's guess was right");
        let decider = if field == "patient_id" {
            "xena"
        } else {
            "vera"
        };
        assert_eq!(by.as_deref(), Some(decider), "{field}");
    }
    let row = db
        .query_one(
            "SELECT revision, patient_id, review_count FROM records WHERE record_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (revision, patient, left): (i32, Option<String>, i32) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(revision, 4, "one revision per decision");
    assert_eq!(patient.as_deref(), Some(value_of("patient_id").as_str()));
    assert_eq!(left, 0);
    assert_eq!(
        schema
            .count("SELECT count(*) FROM measurement_history WHERE record_id IS NOT NULL")
            .await,
        3,
        "the reader's values are kept"
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM audit WHERE action = 'review.resolve'")
            .await,
        3
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM audit WHERE action = 'review.key'")
            .await,
        3,
        "every blind entry is audited (vera, walt, xena)"
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM review_entries WHERE field = 'patient_id'")
            .await,
        3
    );
    assert!(
        schema
            .count("SELECT count(*) FROM audit WHERE actor = 'vera' AND action = 'review.read'")
            .await
            >= 5,
        "every page that showed an item is audited"
    );
    // The live results topic: revision 1 as read, then the reviewed record, ending with
    // revision 4 (each publish shows the revision it carries; a subscriber may see fewer).
    let live = revisions_until(&mut reader, &id, 4).await;
    assert_eq!(live[0]["revision"], 1);
    assert!(live
        .windows(2)
        .all(|w| w[0]["revision"].as_i64() < w[1]["revision"].as_i64()));
    let last = live.last().unwrap();
    assert_eq!(last["patient_id"], value_of("patient_id"));
    for (field, want) in &truth {
        let f = last["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == *field)
            .unwrap();
        assert_eq!(f["value"], *want, "{field}");
        assert_eq!(f["status"], "verified", "{field}");
    }
    assert!(last.get("review_crops").is_none(), "no crops in a revision");

    // Quality sampling: another record of the device, read ok, with the crop of `pd` drawn for
    // a blind check. Vera answers it by keyboard: the page shows the crop and the field name,
    // never the value read; typing what the crop shows and Enter answers it.
    let mut sampled = testkit::record(&DeviceId::new("autoref-07").unwrap(), 6);
    sampled.sample_crops.push(record::ReviewCrop {
        field: "pd".into(),
        png_base64: "iVBORw0KGgoAAAANSUhEUg==".into(),
        context: None,
    });
    let read = sampled.field("pd").and_then(|f| f.value.clone()).unwrap();
    d.publish_record(&sampled).await;
    assert_eq!(d.receipt().await.outcome, ReceiptOutcome::Stored);
    let c = browser(&driver).await;
    log_in(&c, &base, "vera", &vera).await;
    wait_for(
        &c,
        "#blind-checks",
        "the fleet page with the blind-check link",
    )
    .await;
    c.find(Locator::Css("#blind-checks"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#check", "pd").await;
    assert!(text(&c, "#blind").await.is_some());
    assert_eq!(text(&c, "#read").await, None, "the read is hidden");
    shot(&c, "blind-check.png").await;
    type_keys(&c, &format!("{read}\u{E007}")).await;
    wait_for(&c, "#empty", "no blind check left").await;
    assert!(text(&c, "#last").await.unwrap().contains("agreed"));
    c.close().await.unwrap();
    let row = db
        .query_one(
            "SELECT agrees, answered_by, answer FROM blind_checks WHERE record_id = $1 AND field = 'pd'",
            &[&sampled.record_id.as_str()],
        )
        .await
        .unwrap();
    let (agrees, by, answer): (Option<bool>, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(agrees, Some(true));
    assert_eq!(by.as_deref(), Some("vera"));
    assert_eq!(answer, Some(read));
    drop(driver);
    hub.stop().await;
}

fn quantile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p hub --release --test review_page -- --ignored --nocapture"]
async fn review_page_time_with_ten_thousand_items_queued() {
    const RECORDS: u64 = 3_334;
    let schema = TestSchema::new("reviewbench");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-08", "autoref").await;
    let vera = schema.add_user("vera", UserRole::Reviewer).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut d = device(&hub, "autoref-08", &pw_dev).await;
    let dev = DeviceId::new("autoref-08").unwrap();
    for n in 0..RECORDS {
        d.publish_record(&flagged(&dev, n).0).await;
    }
    for _ in 0..RECORDS {
        d.receipt().await;
    }
    let queued = schema
        .count("SELECT count(*) FROM review_queue WHERE resolved_at IS NULL")
        .await;
    assert_eq!(queued, 3 * RECORDS as i64);
    let token = hub.token("vera", &vera).await;
    let time = |path: &'static str, auth: bool| {
        let (hub, token) = (&hub, token.clone());
        async move {
            let mut ms = Vec::new();
            for _ in 0..200 {
                let t0 = Instant::now();
                let (status, body) = if auth {
                    hub.get_as(&token, path).await
                } else {
                    hub.get(path).await
                };
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
                assert_eq!(status, 200, "{path}: {body}");
            }
            ms
        }
    };
    let mut first = time("/review", true).await;
    let mut deep = time("/review?skip=900", true).await;
    let mut queue = time("/api/review?limit=1", true).await;
    let mut floor = time("/healthz", false).await;
    let (f50, f99) = (quantile(&mut floor, 0.5), quantile(&mut floor, 0.99));
    for (name, v) in [
        ("/review", &mut first),
        ("/review?skip=900", &mut deep),
        (
            "/api/review?limit=1 (the queue query alone, JSON)",
            &mut queue,
        ),
    ] {
        let (p50, p95, p99) = (quantile(v, 0.5), quantile(v, 0.95), quantile(v, 0.99));
        println!(
            "review_page {name} with {queued} items queued: p50 {p50:.1} ms p95 {p95:.1} ms p99 {p99:.1} ms; \
             /healthz (same TLS request, no work) p50 {f50:.1} ms p99 {f99:.1} ms; ratio p50 {:.1}",
            p50 / f50
        );
    }
    hub.stop().await;
}

/// POSTs `pairs` as `who` (a bearer token) to `path`.
async fn post_as(hub: &TestHub, token: &str, path: &str, pairs: &[(&str, &str)]) -> util::Response {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", auth.as_str()),
    ];
    hub.request("POST", path, &headers, &util::form(pairs))
        .await
}

/// The reader account `dashboard` (password `password`) subscribed to the live results.
async fn live_reader(hub: &TestHub, password: &str) -> util::Client {
    let topic = "examlink/v1/results/#".to_owned();
    util::connect(
        &hub.broker(),
        "dashboard",
        Some(("dashboard", password)),
        &[topic],
    )
    .await
    .expect("reader connects")
}

/// The live results of `record` on `reader` until one with revision `want`: their revisions.
async fn revisions_until(
    reader: &mut util::Client,
    record: &str,
    want: i64,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    while let Some((_, payload)) = reader.next().await {
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        if v["record_id"] != record {
            continue;
        }
        let done = v["revision"].as_i64() == Some(want);
        seen.push(v);
        if done {
            return seen;
        }
    }
    panic!("no revision {want} of {record} on the live topic; saw {seen:?}");
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_exam_loses_its_patient_and_every_unmatched_exam_is_listed_and_matched() {
    let schema = TestSchema::new("patients");
    schema.migrate().await;
    let pw_dev = schema.add_device("autoref-08", "autoref").await;
    let viewer = schema.add_device("dashboard", hub::auth::READER).await;
    let ana = schema.add_user("ana", UserRole::Reviewer).await;
    let ben = schema.add_user("ben", UserRole::Reviewer).await;
    let hub = TestHub::start(&schema, BrokerMode::Embedded, "unused").await;
    let mut reader = live_reader(&hub, &viewer).await;
    let d = DeviceId::new("autoref-08").unwrap();
    let mut dev = device(&hub, "autoref-08", &pw_dev).await;
    // B: patient read fine, r_cyl flagged. C: the export shows no chart number (absent).
    let mut b = testkit::record(&d, 1);
    b.fields[4].status = FieldStatus::Unreadable;
    b.fields[4].raw = b.fields[4].value.take();
    b.fields[4].number = None;
    let mut c = testkit::record(&d, 2);
    c.fields[0].status = FieldStatus::Absent;
    c.fields[0].value = None;
    c.patient_id = None;
    for r in [&b, &c] {
        dev.publish_record(r).await;
        assert_eq!(dev.receipt().await.outcome, ReceiptOutcome::Stored);
    }
    let (bid, cid) = (b.record_id.as_str(), c.record_id.as_str());
    let first = revisions_until(&mut reader, bid, 1).await;
    assert_eq!(
        first.last().unwrap()["patient_id"],
        b.patient_id.clone().unwrap()
    );
    let (ta, tb) = (hub.token("ana", &ana).await, hub.token("ben", &ben).await);

    // Only C has no patient; it has no pending item yet.
    let (status, page) = hub.get_as(&ta, "/review/patients").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(cid) && !page.contains(bid), "{page}");
    assert!(page.contains("none pending"), "{page}");

    // B's r_cyl shows another patient's exam: wrong patient / not this exam.
    let r = post_as(
        &hub,
        &ta,
        "/api/review",
        &[
            ("record_id", bid),
            ("field", "r_cyl"),
            ("action", "wrong_exam"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("wrong_exam"), "{}", r.body);
    let db = schema.client().await;
    let row = db
        .query_one(
            "SELECT patient_id, revision FROM records WHERE record_id = $1",
            &[&bid],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0),
        None,
        "the exam left the patient"
    );
    assert_eq!(row.get::<_, i32>(1), 2);
    let status = |field: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT m.status, (SELECT q.status FROM review_queue q WHERE q.record_id = m.record_id \
                     AND q.field = m.field AND q.resolved_at IS NULL) \
                 FROM measurements m WHERE m.record_id = $1 AND m.field = $2",
                &[&bid, &field],
            )
            .await
            .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
            .unwrap()
        }
    };
    assert_eq!(
        status("patient_id").await,
        ("invalid".into(), Some("wrong_exam".into()))
    );
    assert_eq!(
        status("r_cyl").await,
        ("unreadable".into(), Some("unreadable".into())),
        "r_cyl still to read"
    );
    let live = revisions_until(&mut reader, bid, 2).await;
    let last = live.last().unwrap();
    assert_eq!(last["patient_id"], serde_json::Value::Null);
    assert_eq!(last["fields"][0]["status"], "invalid");
    assert_eq!(last["fields"][0]["reviewed_by"], "ana");

    // Both exams are listed now; C gets a patient_id item with Match.
    let (_, page) = hub.get_as(&ta, "/review/patients").await;
    assert!(page.contains(cid) && page.contains(bid), "{page}");
    let r = post_as(
        &hub,
        &ta,
        "/review/patients",
        &[("record_id", cid), ("csrf", "")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("/review?record={cid}&field=patient_id&back=patients").as_str())
    );
    let r = post_as(
        &hub,
        &ta,
        "/review/patients",
        &[("record_id", "not-an-id"), ("csrf", "")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let (_, item) = hub
        .get_as(
            &ta,
            &format!("/review?record={cid}&field=patient_id&back=patients"),
        )
        .await;
    assert!(
        item.contains("unmatched") && item.contains("id=\"blind\""),
        "{item}"
    );

    // Both chart numbers are double-keyed: ana and ben agree on each.
    for (id, chart) in [(bid, "31415926"), (cid, "27182818")] {
        for t in [&ta, &tb] {
            let r = post_as(
                &hub,
                t,
                "/api/review",
                &[("record_id", id), ("field", "patient_id"), ("value", chart)],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let row = db
            .query_one(
                "SELECT r.patient_id, m.status, m.value FROM records r JOIN measurements m \
                 ON m.record_id = r.record_id AND m.field = 'patient_id' WHERE r.record_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(chart));
        assert_eq!(row.get::<_, String>(1), "corrected");
        assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(chart));
    }
    let live = revisions_until(&mut reader, bid, 3).await;
    assert_eq!(live.last().unwrap()["patient_id"], "31415926");
    let live = revisions_until(&mut reader, cid, 2).await;
    assert_eq!(live.last().unwrap()["fields"][0]["status"], "corrected");
    let (_, page) = hub.get_as(&ta, "/review/patients").await;
    assert!(
        page.contains("id=\"none\""),
        "every exam has a patient: {page}"
    );
    assert_eq!(
        schema
            .count("SELECT count(*) FROM audit WHERE action = 'review.resolve' AND detail->>'decision' IN ('wrong_exam', 'open_for_matching')")
            .await,
        2
    );
    assert_eq!(
        schema.count("SELECT count(*) FROM republish_queue").await,
        0,
        "every revision acknowledged"
    );
    hub.stop().await;
}
