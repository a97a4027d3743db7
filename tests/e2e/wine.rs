//! The Windows agent (cross-built `agent.exe`, `scripts/windows-build`) under Wine, against a
//! hub running natively: the same readings as the Linux build, delivery over loopback, kill -9
//! of the Wine process, and the MSI (`scripts/windows-package`): its tables, then install,
//! service start and graceful stop, upgrade, uninstall and rollback in a Wine prefix.
//!
//! Ignored in a plain `cargo test` (they need the Windows build, the packages and Wine);
//! `scripts/test` builds those and runs them: `cargo test --workspace --test e2e -- --ignored wine::`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet::procs::AgentOptions;
use fleet::repo_root;
use fleet::wine::{self, Prefix};
use rand::{Rng, SeedableRng};

use crate::util::{wait_until, Run};
use crate::STORE_TIMEOUT;

fn windows_options() -> AgentOptions {
    AgentOptions {
        windows: Some(Prefix::shared().unwrap()),
        ..AgentOptions::default()
    }
}

fn samples() -> Vec<PathBuf> {
    let dir = sim::samples::required("wine recognize").expect("samples");
    let files: Vec<PathBuf> = sim::samples::labelled_exports(&dir)
        .unwrap()
        .into_iter()
        .map(|(image, _)| image)
        .collect();
    assert!(files.len() >= 7 * 25, "only {} samples", files.len());
    files
}

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn recognize_prints_the_same_json_as_the_linux_build_on_every_sample() {
    let files = samples();
    let root = repo_root();
    let linux = Command::new(fleet::bins::bin("agent").unwrap())
        .arg("recognize")
        .arg("--templates")
        .arg(root.join("templates"))
        .arg("--model")
        .arg(root.join("models"))
        .args(&files)
        .output()
        .unwrap();
    assert!(
        linux.status.success(),
        "{}",
        String::from_utf8_lossy(&linux.stderr)
    );
    let prefix = Prefix::shared().unwrap();
    let windows = prefix
        .recognize(&root)
        .unwrap()
        .args(files.iter().map(|f| wine::win_path(f)))
        .output()
        .unwrap();
    assert!(
        windows.status.success(),
        "agent.exe recognize failed: {}",
        String::from_utf8_lossy(&windows.stderr)
    );
    let (l, w) = (
        String::from_utf8(linux.stdout).unwrap(),
        String::from_utf8(windows.stdout).unwrap(),
    );
    assert_eq!(l.lines().count(), files.len());
    for (i, (a, b)) in l.lines().zip(w.lines()).enumerate() {
        assert_eq!(a, b, "{}: Linux and Windows differ", files[i].display());
    }
    assert_eq!(l, w, "outputs differ (line endings or length)");
    eprintln!(
        "wine recognize: {} samples, {} bytes of JSON, byte-identical",
        files.len(),
        l.len()
    );
}

/// Layouts of the Windows agents (one per device type the tests cover; four agents started
/// together, which is what made tract's `wmic` probe hang under Wine before the agent kept
/// tract off it: `agent::recognize::model::keep_tract_off_wmic`).
const LAYOUTS: &[&str] = &[
    "autoref_fw3",
    "biometer_fw1",
    "specular_fw1",
    "tonometer_fw1",
];

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn windows_agents_deliver_every_export_once_to_a_linux_hub() {
    let mut run = Run::with_options_and_layouts("wine", LAYOUTS.len(), &windows_options(), LAYOUTS);
    run.start_hub();
    run.start_agents();
    run.emit(4);
    run.wait_all_stored(STORE_TIMEOUT);
    let s = run.check_exactly_once_and_truth();
    eprintln!("wine delivery: {s:?}");
    for a in &run.agents {
        let log = a.proc.log();
        assert!(!log.contains("panicked"), "{}: {log}", a.device_id);
        // The Wine process runs agent.exe itself (wine execs its loader).
        let rss = a.proc.rss_kib().expect("the Wine agent is running");
        eprintln!(
            "wine delivery: {} RSS {:.1} MiB",
            a.device_id,
            rss as f64 / 1024.0
        );
    }
}

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn kill9_of_the_wine_process_loses_and_duplicates_nothing() {
    let mut run = Run::with_options_and_layouts("winekill", 2, &windows_options(), LAYOUTS);
    run.start_hub();
    run.start_agents();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _round in 0..4 {
        run.emit(2);
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..4000)));
        let i = rng.gen_range(0..run.agents.len());
        run.agents[i].proc.kill9();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1000)));
        run.agents[i].proc.start().unwrap();
    }
    run.wait_all_stored(STORE_TIMEOUT);
    let s = run.check_exactly_once_and_truth();
    eprintln!("wine kill -9: {s:?}");
}

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn an_export_locked_by_the_device_software_waits_and_is_taken_once_released() {
    use std::io::BufRead;
    let mut run = Run::with_options_and_layouts("winelock", 1, &windows_options(), LAYOUTS);
    run.start_hub();
    // The export is there before the agent starts, held without sharing (a sharing
    // violation for every other open) for 20 s.
    let name = run.feed.emit(&mut run.devices[0]).unwrap();
    let export = run.agents[0].exports.join(&name);
    let prefix = Prefix::shared().unwrap();
    let mut locker = prefix
        .wine()
        .arg(wine::locker_exe().unwrap())
        .arg(wine::win_path(&export))
        .arg("20")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(locker.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "locked");
    run.start_agents();
    // While locked: retried, never quarantined or refused.
    std::thread::sleep(Duration::from_secs(12));
    assert!(locker.try_wait().unwrap().is_none(), "the lock ended early");
    assert_eq!(run.stored(), 0, "an export still locked was stored");
    assert!(run.rejected().is_empty(), "{:?}", run.rejected());
    assert!(
        std::fs::read_dir(&run.agents[0].quarantine).map_or(true, |mut d| d.next().is_none()),
        "a locked export was quarantined"
    );
    locker.wait().unwrap();
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
}

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn recognize_reads_an_export_whose_path_is_longer_than_max_path() {
    let sample = &samples()[0];
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_owned();
    for i in 0..6 {
        deep.push(format!(
            "{i}-a-folder-name-of-fifty-characters-for-the-test-"
        ));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let long = deep.join(sample.file_name().unwrap());
    std::fs::copy(sample, &long).unwrap();
    let win = wine::win_path(&long);
    assert!(win.len() > 260, "{} characters", win.len());
    let root = repo_root();
    let run = |file: String| {
        let out = Prefix::shared()
            .unwrap()
            .recognize(&root)
            .unwrap()
            .arg(file)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let (short, long) = (run(wine::win_path(sample)), run(win));
    assert!(!long.contains("io_error"), "{long}");
    assert_eq!(short, long);
}

fn msi(version: &str) -> PathBuf {
    let p = wine::dist_dir()
        .unwrap()
        .join(format!("examlink-agent-{version}-x64.msi"));
    assert!(
        p.is_file(),
        "{} missing: run scripts/windows-package (and scripts/windows-package {version})",
        p.display()
    );
    p
}

fn msi_table(msi: &Path, table: &str) -> String {
    let out = Command::new("msiinfo")
        .arg("export")
        .arg(msi)
        .arg(table)
        .output()
        .expect("msiinfo (msitools: scripts/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The workspace version (the MSI's), and the next patch version (the upgrade).
fn versions() -> (String, String) {
    let v = env!("CARGO_PKG_VERSION");
    let mut parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
    parts[2] += 1;
    let next = parts
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    (v.to_owned(), next)
}

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn the_msi_carries_the_agent_its_model_templates_and_service() {
    let (v, _) = versions();
    let msi = msi(&v);
    let files = msi_table(&msi, "File");
    let mut want = vec![
        "agent.exe".to_owned(),
        "agent.default.toml".into(),
        "encoder.onnx".into(),
        "decoder.onnx".into(),
        "model.json".into(),
    ];
    for e in std::fs::read_dir(repo_root().join("templates")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            want.push(name);
        }
    }
    for name in &want {
        assert!(
            files.lines().any(|l| l.split('\t').nth(2) == Some(name)),
            "{name} not in the MSI's File table:\n{files}"
        );
    }
    assert!(
        !files.to_lowercase().contains("bcryptprimitives"),
        "the Wine shim is shipped"
    );
    let service = msi_table(&msi, "ServiceInstall");
    let row = service
        .lines()
        .find(|l| l.contains("examlink-agent"))
        .unwrap_or_else(|| panic!("no examlink-agent service:\n{service}"));
    let cols: Vec<&str> = row.split('\t').collect();
    // Name, DisplayName, ServiceType (16: own process), StartType (2: automatic), ...
    assert_eq!(
        (cols[1], cols[3], cols[4]),
        ("examlink-agent", "16", "2"),
        "{row}"
    );
    assert!(
        row.contains(r#"service run --config "[CommonAppDataFolder]examlink\agent.toml""#),
        "{row}"
    );
    let control = msi_table(&msi, "ServiceControl");
    let row = control
        .lines()
        .find(|l| l.contains("examlink-agent"))
        .unwrap_or_else(|| panic!("no ServiceControl row:\n{control}"));
    // Event 163: start on install, stop on install and uninstall, delete on uninstall.
    assert_eq!(row.split('\t').nth(2), Some("163"), "{row}");
    let upgrade = msi_table(&msi, "Upgrade");
    assert!(upgrade.contains("WIX_UPGRADE_DETECTED"), "{upgrade}");
}

/// `wine msiexec <args>` in `prefix`; panics with its output on failure.
fn msiexec(prefix: &Prefix, args: &[&str]) {
    let out = prefix.wine().arg("msiexec").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "msiexec {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `agent.exe service stop` (the installed `exe`); panics when it fails.
fn service_stop(prefix: &Prefix, exe: &str) {
    let out = prefix
        .wine()
        .args([exe, "service", "stop"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "service stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn service_registered(prefix: &Prefix) -> bool {
    let out = prefix
        .wine()
        .args([
            "reg",
            "query",
            r"HKLM\System\CurrentControlSet\Services\examlink-agent",
        ])
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ImagePath")
}

#[test]
#[ignore = "needs the Windows build and Wine: scripts/test runs it"]
fn msi_install_service_upgrade_uninstall_and_rollback_under_wine() {
    let (v1, v2) = versions();
    let (msi1, msi2) = (msi(&v1), msi(&v2));
    let dir = tempfile::tempdir().unwrap();
    let prefix = Prefix::at(&dir.path().join("prefix")).unwrap();
    let program = prefix.drive_c().join("Program Files/examlink");
    let data = prefix.drive_c().join("ProgramData/examlink");

    // Install: the files, the service registered and started by the MSI; the service makes
    // ProgramData\examlink (configuration from agent.default.toml, logs) at its first start.
    msiexec(&prefix, &["/i", &wine::win_path(&msi1), "/qn"]);
    for f in [
        "agent.exe",
        "agent.default.toml",
        "models/encoder.onnx",
        "templates/plates/biometer_fw1.png",
    ] {
        assert!(program.join(f).is_file(), "{f} not installed");
    }
    assert!(service_registered(&prefix), "service not registered");
    let log = data.join("logs/agent.log");
    let started = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Service running."))
    });
    assert!(
        started.is_some(),
        "the service did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_else(|e| format!("no log: {e}"))
    );
    let config = data.join("agent.toml");
    let edited = std::fs::read_to_string(&config).unwrap() + "\n# edited by the operator\n";
    std::fs::write(&config, &edited).unwrap();

    // A graceful stop through the service control manager. (Wine also stops services
    // gracefully when its last ordinary process exits, and starts automatic ones with the
    // next: a Wine-only behaviour that the stop command copes with.)
    let exe = wine::win_path(&program.join("agent.exe"));
    service_stop(&prefix, &exe);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Service stop requested") && text.contains("Shutting down."),
        "{text}"
    );

    // Upgrade to the next version: program files replaced, configuration and data kept.
    msiexec(&prefix, &["/i", &wine::win_path(&msi2), "/qn"]);
    assert!(
        service_registered(&prefix),
        "service gone after the upgrade"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "configuration changed by the upgrade"
    );

    // Rollback: uninstall (ProgramData stays), then the previous MSI.
    msiexec(&prefix, &["/x", &wine::win_path(&msi2), "/qn"]);
    assert!(
        !program.join("agent.exe").exists(),
        "agent.exe left after uninstall"
    );
    assert!(!service_registered(&prefix), "service left after uninstall");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "configuration lost by the uninstall"
    );
    let starts = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Agent starting.")
            .count()
    };
    let before = starts(&log);
    msiexec(&prefix, &["/i", &wine::win_path(&msi1), "/qn"]);
    assert!(program.join("agent.exe").is_file());
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "configuration changed by the rollback"
    );
    // The service of the version rolled back to starts on the kept outbox.
    assert!(
        data.join("data/outbox").is_dir(),
        "no outbox under ProgramData"
    );
    let restarted = wait_until(Duration::from_secs(60), || starts(&log) > before);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(restarted.is_some(), "no start after the rollback:\n{text}");
    assert!(
        !text.contains("NewerFormat") && !text.contains("Agent failed"),
        "{text}"
    );
    service_stop(&prefix, &exe);
    prefix.wait_server();
}
