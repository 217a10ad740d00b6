//! The SCIM conformance tester `scim2-tester` (PyPI) against the local mode: no check may
//! fail. Install it with `scripts/install-test-tools`.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::start_server;

fn scim_cli() -> Option<PathBuf> {
    let installed = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.cache/tools/bin/scim"
    ));
    if installed.exists() {
        return Some(installed);
    }
    let on_path = Command::new("scim").arg("--help").output().ok()?;
    on_path.status.success().then(|| PathBuf::from("scim"))
}

#[test]
fn scim2_tester_reports_no_failures_against_the_local_mode() {
    let Some(cli) = scim_cli() else {
        eprintln!("skipping: scim2-tester is not installed; run scripts/install-test-tools");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = start_server(
        &["local", "--data", data.to_str().expect("utf-8")],
        &[],
        dir.path(),
    );
    let out = Command::new(cli)
        .args(["--url", &server.base, "test"])
        .env(
            "SCIM_CLI_HEADERS",
            format!("Authorization: Bearer {}", server.token),
        )
        .output()
        .expect("the scim command runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let failures: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("ERROR") || l.starts_with("CRITICAL"))
        .collect();
    let passed = report.lines().filter(|l| l.starts_with("SUCCESS")).count();
    println!(
        "scim2-tester: {passed} checks passed, {} failed",
        failures.len()
    );
    assert!(
        passed > 100,
        "too few checks ran:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failures.is_empty() && out.status.success(),
        "conformance failures:\n{report}"
    );
}
