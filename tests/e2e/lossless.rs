//! Nothing lost or wrongly flagged on a hospital's first day (#11): template versions out of
//! step between agents and hub, a device registered late, a device clock hours fast, exports
//! stamped around midnight, poison device messages in a stream, and a replay of rejects after a
//! template fix with kill -9 in the middle. Each test ends with the database compared to the
//! truth: every export exactly once, every ok value right.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet::procs::AgentOptions;

use crate::util::{rewrite, wait_until, Run};

const STORE_TIMEOUT: Duration = Duration::from_secs(300);

/// A change to one template's text, by template id.
type Edit<'a> = (&'a str, &'a dyn Fn(&str) -> String);

/// A copy of the repository's templates in `dir`, with `edit` applied to each named template's
/// text.
fn templates_copy(dir: &Path, edit: &[Edit]) -> PathBuf {
    let src = fleet::repo_root().join("templates");
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let mut text = std::fs::read_to_string(&p).unwrap();
            if let Some((_, f)) = edit.iter().find(|(n, _)| *n == name) {
                text = f(&text);
            }
            std::fs::write(dir.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    // Templates name their plates relative to their folder.
    let plates = dir.join("plates");
    if !plates.exists() {
        std::os::unix::fs::symlink(src.join("plates"), plates).unwrap();
    }
    dir.to_path_buf()
}

/// The template's text with its version one higher.
fn bumped(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("version = "))
        .expect("a version line");
    let v: u32 = line["version = ".len()..].trim().parse().unwrap();
    text.replacen(line, &format!("version = {}", v + 1), 1)
}

fn templates_line(dir: &Path) -> String {
    format!("templates_dir = {dir:?}")
}

fn assert_healthy(run: &Run) {
    let (code, body) = run.https_get("/healthz");
    assert_eq!(code, 200, "/healthz: {body}\n{}", run.logs());
}

fn metric(run: &Run, name: &str) -> f64 {
    let (_, text) = run.https_get("/metrics");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

// See: #11
#[test]
fn old_and_new_template_versions_coexist_across_a_hub_upgrade() {
    let mut run = Run::new("versions", 2, &AgentOptions::default(), false);
    let dir = tempfile::tempdir().unwrap();
    let repo = fleet::repo_root().join("templates");
    let newer = templates_copy(
        &dir.path().join("newer"),
        &[("autoref_fw2", &bumped), ("autoref_fw3", &bumped)],
    );
    // dev-00 (autoref_fw2) stays on today's templates; dev-01 (autoref_fw3) is upgraded first.
    rewrite(
        &run.agents[1].config,
        &format!("templates_dir = {repo:?}"),
        &templates_line(&newer),
    );
    run.start_hub();
    run.start_agents();
    run.emit(2);
    // The old hub stores dev-00's records and defers dev-01's: it does not know that version yet.
    let deferred = wait_until(STORE_TIMEOUT, || {
        run.count("SELECT count(*) FROM examlink.records WHERE device_id = 'dev-00'") == 2
            && run.count("SELECT count(*) FROM examlink.deferrals WHERE device_id = 'dev-01' AND code = 'template_version'") == 2
    });
    assert!(deferred.is_some(), "not deferred\n{}", run.logs());
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.records WHERE device_id = 'dev-01'"),
        0
    );
    assert_eq!(run.count("SELECT count(*) FROM examlink.rejects"), 0);
    assert_healthy(&run);
    assert!(metric(&run, "examlink_hub_records_deferred_total") >= 2.0);

    // The hub is upgraded: it now knows both versions, and dev-01's records arrive.
    run.hub.proc.stop(Duration::from_secs(10));
    rewrite(
        &run.hub.config,
        &format!("templates_dir = {repo:?}"),
        &templates_line(&newer),
    );
    run.start_hub();
    // The older agent keeps sending with the version it has.
    run.emit(2);
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
    assert_eq!(run.count("SELECT count(*) FROM examlink.deferrals"), 0);
    assert_eq!(
        run.count("SELECT count(DISTINCT template_version) FROM examlink.records WHERE template = 'autoref_fw2'"),
        1,
        "dev-00 kept its version"
    );
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.template_versions WHERE template_id IN ('autoref_fw2', 'autoref_fw3')"),
        4,
        "both versions of both templates are kept"
    );
    assert_eq!(run.count("SELECT count(*) FROM examlink.rejects"), 0);
    assert_healthy(&run);

    // dev-00 is upgraded too, and its operator has its first two exports read again: each
    // becomes a new revision that supersedes the first reading (not a second export).
    run.agents[0].proc.stop(Duration::from_secs(10));
    rewrite(
        &run.agents[0].config,
        &format!("templates_dir = {repo:?}"),
        &templates_line(&newer),
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&run.agents[0].exports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    let agent = fleet::bins::bin("agent").unwrap();
    let out = std::process::Command::new(&agent)
        .arg("--config")
        .arg(&run.agents[0].config)
        .arg("requeue")
        .args(&files[..2])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run.agents[0].proc.start().unwrap();
    let superseded = wait_until(STORE_TIMEOUT, || {
        run.count("SELECT count(*) FROM examlink.records WHERE device_id = 'dev-00' AND superseded_by IS NOT NULL") == 2
    });
    assert!(
        superseded.is_some(),
        "re-reads did not supersede\n{}",
        run.logs()
    );
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.records r JOIN examlink.records o ON o.superseded_by = r.record_id AND r.supersedes = o.record_id"),
        2,
        "each revision links to the reading it replaces"
    );
    run.check_exactly_once_and_truth();
}

// See: #11
#[test]
fn an_unregistered_device_delivers_once_registered() {
    let mut run = Run::new("latereg", 1, &AgentOptions::default(), false);
    // The agent was installed with its password before IT registered the device.
    let mut c = run.client().unwrap();
    c.execute(
        "DELETE FROM examlink.devices WHERE device_id = 'dev-00'",
        &[],
    )
    .unwrap();
    run.start_hub();
    run.start_agents();
    run.emit(3);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(run.stored(), 0);
    assert!(run.agents[0].proc.running(), "{}", run.logs());
    let log = run.agents[0].proc.log();
    assert!(
        log.contains("Cannot connect to the broker"),
        "the agent must say why nothing goes out\n{log}"
    );
    assert_healthy(&run);
    // Registered later (an hour, a day: the agent keeps retrying with a capped backoff and
    // keeps every record in its outbox meanwhile).
    let password = run.agents[0].config.with_file_name("password");
    let (ok, out) = run.hub_cli(&[
        "device",
        "add",
        "dev-00",
        "--type",
        "autoref",
        "--password-file",
        password.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
    assert_healthy(&run);
}

// See: #11
#[test]
fn a_device_clock_three_hours_fast_is_recorded_not_refused() {
    let mut run = Run::new("fastclock", 1, &AgentOptions::default(), false);
    run.agents[0]
        .proc
        .wrap("faketime", &["-m", "--exclude-monotonic", "-f", "+3h"]);
    run.start_hub();
    run.start_agents();
    run.emit(3);
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.records WHERE clock_suspect"),
        3,
        "every record is marked clock_suspect\n{}",
        run.logs()
    );
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.review_queue WHERE status = 'clock_suspect' AND reason LIKE '%ahead%'"),
        3
    );
    assert_eq!(run.count("SELECT count(*) FROM examlink.rejects"), 0);
    assert_eq!(run.count("SELECT count(*) FROM examlink.deferrals"), 0);
    assert_healthy(&run);
}

// See: #11
#[test]
fn exports_stamped_today_at_2359_and_0001_are_ok() {
    let mut run = Run::new("midnight", 2, &AgentOptions::default(), false);
    run.start_hub();
    run.start_agents();
    let today = chrono::Utc::now().date_naive();
    for d in &mut run.devices {
        for (h, m) in [(23, 59), (0, 1)] {
            let at = today.and_hms_opt(h, m, 0).unwrap();
            run.feed.emit_at(d, at).unwrap();
        }
    }
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
    let mut c = run.client().unwrap();
    let rows = c
        .query(
            "SELECT m.field, m.value, m.status FROM examlink.measurements m \
             WHERE m.field IN ('exam_date', 'exam_time')",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 8, "two devices, two exports, two fields");
    let want_date = today.format("%Y-%m-%d").to_string();
    for r in &rows {
        let (field, value, status): (String, Option<String>, String) =
            (r.get(0), r.get(1), r.get(2));
        assert_eq!(status, "ok", "{field} {value:?} flagged");
        match field.as_str() {
            "exam_date" => assert_eq!(value.as_deref(), Some(want_date.as_str())),
            _ => assert!(
                matches!(value.as_deref(), Some("23:59") | Some("00:01")),
                "{value:?}"
            ),
        }
    }
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.records WHERE exam_date IS NULL OR clock_suspect"),
        0
    );
}

/// Publishes one message as device `id` with mosquitto_pub, over TLS. The host is a name in
/// the hub's certificate: OpenSSL clients send an IP address as SNI, which the hub's TLS
/// (rustls) refuses as malformed.
fn publish_as(run: &Run, id: &str, password: &str, topic: &str, payload: &str, retain: bool) {
    let mut cmd = std::process::Command::new("mosquitto_pub");
    cmd.args(["-h", "localhost", "-p", &run.hub.mqtt_port.to_string()])
        .args(["-i", id, "-u", id, "-P", password, "-q", "1", "-t", topic])
        .arg("--cafile")
        .arg(run.hub.ca_file())
        .args(["-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records per second between the first and the last `stored_at` of the records taken since
/// `after` (the database's own clock, so polling does not blur it).
fn drain_rate(run: &Run, after: chrono::DateTime<chrono::Utc>) -> f64 {
    let mut c = run.client().unwrap();
    let r = c
        .query_one(
            "SELECT count(*), extract(epoch FROM max(stored_at) - min(stored_at))::float8 \
             FROM examlink.records WHERE stored_at > $1",
            &[&after],
        )
        .unwrap();
    let (n, secs): (i64, Option<f64>) = (r.get(0), r.get(1));
    (n.max(1) - 1) as f64 / secs.unwrap_or(0.0).max(0.001)
}

// See: #11
#[test]
fn poison_status_and_rejection_do_not_stall_twenty_devices() {
    const DEVICES: usize = 20;
    const PER_ROUND: usize = 5;
    // The layouts that read fastest: this test is about the hub, not about reading.
    let mut run = Run::with_layouts(
        "poison",
        DEVICES,
        &[
            "autoref_fw2",
            "autoref_fw3",
            "tonometer_fw1",
            "biometer_fw1",
        ],
    );
    let poison_pw = run.hub.add_device("poison-01", "autoref").unwrap();
    run.start_agents();
    // Each round: the agents read their exports while the hub is down, then the hub drains
    // the fleet's backlog. Round 0 warms up (the first connection of every agent, the first
    // statuses); rounds 1 and 2 are alike (a hub restart, the agents' reconnect and resend) but
    // for the poison, which round 2 carries.
    let mut rates = Vec::new();
    for round in 0..3 {
        run.emit(PER_ROUND);
        let want = run.written();
        let queued = wait_until(STORE_TIMEOUT, || {
            run.agents.iter().all(|a| {
                a.proc.log().matches("Export queued for the hub").count() >= (round + 1) * PER_ROUND
            })
        });
        assert!(
            queued.is_some(),
            "round {round}: exports not queued\n{}",
            run.logs()
        );
        let since = chrono::Utc::now();
        run.start_hub();
        if round == 2 {
            let dev = "poison-01";
            // A status far in the future with a 100 KB version string, and a rejection notice
            // whose digest is 12,000 hex digits (an index row PostgreSQL refuses).
            let status = format!(
                "{{\"schema_version\":1,\"device_id\":\"{dev}\",\"online\":true,\"agent_version\":\"{}\",\"backlog\":0,\"exports\":0,\"delivered\":0,\"rejected\":0,\"at\":\"9999-01-01T00:00:00Z\"}}",
                "v".repeat(100_000)
            );
            publish_as(
                &run,
                dev,
                &poison_pw,
                &format!("examlink/v1/devices/{dev}/status"),
                &status,
                true,
            );
            let rejection = format!(
                "{{\"schema_version\":1,\"device_id\":\"{dev}\",\"source_file\":\"x.png\",\"file_sha256\":\"{}\",\"code\":\"unknown_layout\",\"reason\":\"r\",\"quarantined_as\":\"q/x.png\",\"at\":\"2026-12-01T00:00:00Z\"}}",
                "a".repeat(12_000)
            );
            publish_as(
                &run,
                dev,
                &poison_pw,
                &format!("examlink/v1/devices/{dev}/rejections"),
                &rejection,
                false,
            );
        }
        let stored = wait_until(STORE_TIMEOUT, || {
            run.stored() + run.rejected().len() as u64 >= want
        });
        assert!(
            stored.is_some(),
            "round {round}: stored {} of {want}\n{}",
            run.stored(),
            run.logs()
        );
        rates.push(drain_rate(&run, since));
        if round < 2 {
            run.hub.proc.stop(Duration::from_secs(10));
        }
    }
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
    // Both poison messages are kept, with their reasons; every other device's status is stored.
    let poisoned = wait_until(Duration::from_secs(30), || {
        run.count("SELECT count(*) FROM examlink.rejects WHERE device_id = 'poison-01' AND code IN ('status_field', 'rejection_field')") == 2
    });
    assert!(
        poisoned.is_some(),
        "poison not kept as rejects\n{}",
        run.logs()
    );
    let statuses = wait_until(Duration::from_secs(30), || {
        run.count("SELECT count(*) FROM examlink.devices WHERE device_id LIKE 'dev-%' AND status_at > now() - interval '1 minute'") == DEVICES as i64
    });
    assert!(
        statuses.is_some(),
        "some devices' status was not stored\n{}",
        run.logs()
    );
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.devices WHERE device_id = 'poison-01' AND status_at IS NOT NULL"),
        0,
        "the poison status must not be applied"
    );
    assert_healthy(&run);
    // The figure the issue asks for, printed, not asserted (tests never assert on wall-clock
    // time): the poisoned round against the clean round before it, both after a hub restart.
    // The no-stall property is asserted above: every record of the poisoned round stored,
    // every device's status stored, /healthz ok.
    let ratio = rates[2] / rates[1];
    eprintln!(
        "poison: drain rate warm-up {:.1}, without poison {:.1}, with poison {:.1} records/s; ratio {ratio:.2}",
        rates[0], rates[1], rates[2]
    );
}

// See: #11
#[test]
fn rejects_replay_after_a_template_fix_survives_kill9() {
    let mut run = Run::new("replay", 1, &AgentOptions::default(), false);
    let dir = tempfile::tempdir().unwrap();
    let repo = fleet::repo_root().join("templates");
    // The hub's copy of autoref_fw2 is wrong (same version): r_sph only up to ±0.25 D, so most
    // records the agent reads right are rejected.
    let narrow = |t: &str| {
        t.replacen(
            "range = [\"-25.00\", \"+22.00\"]",
            "range = [\"-0.25\", \"+0.25\"]",
            1,
        )
    };
    let broken = templates_copy(&dir.path().join("broken"), &[("autoref_fw2", &narrow)]);
    rewrite(
        &run.hub.config,
        &format!("templates_dir = {repo:?}"),
        &templates_line(&broken),
    );
    run.start_hub();
    run.start_agents();
    run.emit(8);
    let written = run.written() as i64;
    let settled = wait_until(STORE_TIMEOUT, || {
        run.stored() as i64
            + run.count("SELECT count(*) FROM examlink.rejects WHERE code = 'value'")
            >= written
    });
    assert!(settled.is_some(), "{}", run.logs());
    let rejected = run.count("SELECT count(*) FROM examlink.rejects WHERE code = 'value'");
    assert!(rejected >= 1, "the broken template rejected nothing");
    assert!(metric(&run, "examlink_hub_records_rejected_total") >= rejected as f64);
    assert_healthy(&run);
    // Kept whole: the payload is all there.
    assert_eq!(
        run.count("SELECT count(*) FROM examlink.rejects WHERE length(payload) <> payload_size"),
        0
    );

    // The template is fixed and the hub restarted; a replay is started and killed with the hub.
    run.hub.proc.stop(Duration::from_secs(10));
    rewrite(
        &run.hub.config,
        &templates_line(&broken),
        &format!("templates_dir = {repo:?}"),
    );
    run.start_hub();
    let mut replay = std::process::Command::new(fleet::bins::bin("hub").unwrap())
        .arg("--config")
        .arg(&run.hub.config)
        .args(["rejects", "replay", "--device", "dev-00"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20)
        && run.count("SELECT count(*) FROM examlink.rejects WHERE replayed_at IS NOT NULL") < 1
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    replay.kill().ok();
    replay.wait().ok();
    run.hub.proc.kill9();
    let at_kill = run.count("SELECT count(*) FROM examlink.rejects WHERE replayed_at IS NOT NULL");
    eprintln!("replay: killed after {at_kill} of {rejected} rejects were replayed");
    run.start_hub();
    let (ok, out) = run.hub_cli(&["rejects", "replay", "--device", "dev-00"]);
    assert!(ok, "{out}");
    // Twice is once.
    let (ok, again) = run.hub_cli(&["rejects", "replay", "--device", "dev-00"]);
    assert!(ok, "{again}");
    assert!(again.contains("replayed: 0 stored"), "{again}");
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
    assert_eq!(
        run.count(
            "SELECT count(*) FROM examlink.rejects WHERE code = 'value' AND replayed_at IS NULL"
        ),
        0,
        "{out}"
    );
    let (ok, listed) = run.hub_cli(&["rejects", "list", "--all"]);
    assert!(ok && listed.contains("value"), "{listed}");
    assert!(run.count("SELECT count(*) FROM examlink.audit WHERE action = 'rejects.replay'") >= 2);
    assert_healthy(&run);
}
