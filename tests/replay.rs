//! Every recorded IdP flow in `tests/idp-cases/` replayed against the local mode and, when
//! an API server is available, against `scim-operator run`.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use common::{TestNamespace, install_crds, kubeconfig, replay, start_server};

#[test]
fn every_recorded_idp_flow_passes_against_the_local_mode() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let server = start_server(&["local", "--data", data], &[], dir.path());
    let (ok, output) = replay(&server);
    println!("{output}");
    if !ok {
        server.dump_log();
    }
    assert!(ok, "some recorded flows failed:\n{output}");
    assert!(output.contains(" 0 failed"), "unexpected summary: {output}");
}

#[test]
fn every_recorded_idp_flow_passes_against_run_on_a_real_api_server() {
    let Some(kubeconfig) = kubeconfig("replay against scim-operator run") else {
        return;
    };
    install_crds(&kubeconfig);
    let ns = TestNamespace::create(&kubeconfig, "replay");
    let dir = tempfile::tempdir().expect("a temp dir");
    let server = start_server(
        &["run", "--namespace", &ns.name],
        &[("KUBECONFIG", &kubeconfig)],
        dir.path(),
    );
    let (ok, output) = replay(&server);
    println!("{output}");
    if !ok {
        server.dump_log();
    }
    assert!(ok, "some recorded flows failed:\n{output}");
}
