//! `crds/` must hold exactly what `scim-operator crds` prints, and a real API server must
//! accept it and print the columns users look at.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::process::Command;

use common::{TestNamespace, install_crds, kubeconfig, kubectl_ok};

const CRDS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/scim-operator.yaml");

fn printed_crds() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_scim-operator"))
        .arg("crds")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn the_committed_crds_equal_what_the_binary_prints() {
    let committed = std::fs::read_to_string(CRDS_FILE).expect("crds/scim-operator.yaml exists");
    assert!(
        committed == printed_crds(),
        "crds/scim-operator.yaml is stale; regenerate it with \
         `cargo run -- crds > crds/scim-operator.yaml`"
    );
}

#[test]
fn the_chart_ships_the_same_crds() {
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/scim-operator/crds/scim-operator.yaml"
    );
    let Ok(in_chart) = std::fs::read_to_string(chart) else {
        panic!("the chart must ship its CRDs at {chart}");
    };
    assert!(
        in_chart == printed_crds(),
        "the chart's CRDs are stale; copy crds/scim-operator.yaml to {chart}"
    );
}

#[test]
fn a_real_api_server_accepts_the_crds_and_prints_useful_columns() {
    let Some(kubeconfig) = kubeconfig("CRD acceptance") else {
        return;
    };
    install_crds(&kubeconfig);
    let ns = TestNamespace::create(&kubeconfig, "crds");
    let user = format!(
        "apiVersion: scim-operator.dev/v1alpha1\nkind: ScimUser\nmetadata:\n  name: u-ada\n  \
         namespace: {}\nspec:\n  id: 0b9c\n  userName: ada@example.com\n  active: true\n",
        ns.name
    );
    kubectl_ok(&kubeconfig, &["apply", "-f", "-"], Some(&user));
    let table = kubectl_ok(&kubeconfig, &["get", "scimusers", "-n", &ns.name], None);
    let header = table.lines().next().unwrap_or_default();
    for column in ["USERNAME", "ACTIVE", "GROUPS", "AGE"] {
        assert!(
            header.contains(column),
            "missing column {column} in:\n{table}"
        );
    }
    assert!(table.contains("ada@example.com"), "{table}");
    // An empty listing prints nothing on stdout; the point is that the kind is served.
    kubectl_ok(&kubeconfig, &["get", "scimgroups", "-n", &ns.name], None);
    // A fresh discovery cache: kubectl keeps categories for hours once it has seen a server.
    let cache = tempfile::tempdir().expect("temp dir");
    let cache_flag = format!("--cache-dir={}", cache.path().display());
    let by_category = kubectl_ok(
        &kubeconfig,
        &["get", "scim", "-n", &ns.name, &cache_flag],
        None,
    );
    assert!(by_category.contains("ada@example.com"), "{by_category}");
}
