//! The agent binary against the hub binary, TLS as out of the box (#12): an agent trusting
//! another CA delivers nothing (and loses nothing), and plain MQTT is refused unless allowed.

use std::time::Duration;

use fleet::procs::AgentOptions;

use crate::util::{rewrite, wait_until, Run};

/// A self-signed CA that did not sign the hub's certificate (made with `openssl`).
fn foreign_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let ca = dir.join("other-ca.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=not the examlink hub CA",
        ])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ca
}

// See: #12
#[test]
fn the_agent_refuses_a_hub_certificate_from_another_ca_and_loses_nothing() {
    let mut run = Run::new("tlsca", 1, &AgentOptions::default(), false);
    run.start_hub();
    let dir = tempfile::tempdir().unwrap();
    let other = foreign_ca(dir.path());
    let right = run.hub.ca_file();
    let config = run.agents[0].config.clone();
    rewrite(
        &config,
        &format!("tls_ca_file = {right:?}"),
        &format!("tls_ca_file = {other:?}"),
    );
    run.start_agents();
    run.emit(2);
    // The agent reads the exports but cannot deliver them: the hub's certificate does not
    // chain to the CA it trusts.
    let refused = wait_until(Duration::from_secs(120), || {
        let log = run.agents[0].proc.log().to_ascii_lowercase();
        log.contains("certificate") || log.contains("unknownissuer")
    });
    assert!(
        refused.is_some(),
        "no certificate error in the agent's log:\n{}",
        run.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        run.stored(),
        0,
        "records crossed to a hub the agent must not trust"
    );

    // With the right CA, the same exports arrive (kept in the outbox meanwhile).
    run.agents[0].proc.stop(Duration::from_secs(10));
    rewrite(
        &config,
        &format!("tls_ca_file = {other:?}"),
        &format!("tls_ca_file = {right:?}"),
    );
    run.agents[0].proc.start().unwrap();
    run.wait_all_stored(Duration::from_secs(300));
    run.check_exactly_once_and_truth();
}

// See: #12
#[test]
fn the_agent_refuses_plain_mqtt_unless_allowed() {
    let mut run = Run::new("plainagent", 1, &AgentOptions::default(), false);
    let config = run.agents[0].config.clone();
    rewrite(&config, "broker_url = \"mqtts://", "broker_url = \"mqtt://");
    run.agents[0].proc.start().unwrap();
    let exited = wait_until(Duration::from_secs(60), || !run.agents[0].proc.running());
    assert!(
        exited.is_some(),
        "the agent ran with a plaintext broker URL"
    );
    let log = run.agents[0].proc.log();
    assert!(
        log.contains("publish.broker_url") && log.contains("allow_plaintext"),
        "{log}"
    );
}
