//! The install walk-through on a real API server, as far as it goes without a container
//! runtime: the chart is rendered and applied (CRDs, RBAC, connection, initial token), the
//! operator runs outside the cluster with the credentials of the chart's ServiceAccount,
//! the day-one flow passes under those permissions, and what the operator must not do is
//! refused by the API server.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{TestNamespace, eventually, install_crds, kubectl, kubectl_ok, request, start_server};
use serde_json::json;

fn helm() -> Option<PathBuf> {
    let installed = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.cache/tools/bin/helm"
    ));
    if installed.exists() {
        return Some(installed);
    }
    Command::new("helm")
        .arg("version")
        .output()
        .ok()?
        .status
        .success()
        .then(|| PathBuf::from("helm"))
}

/// A kubeconfig for the same server that authenticates with a bearer token.
fn token_kubeconfig(admin: &str, token: &str, dir: &std::path::Path) -> String {
    let server = kubectl_ok(
        admin,
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
        None,
    );
    let ca = kubectl_ok(
        admin,
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ],
        None,
    );
    let path = dir.join("operator.kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: operator\n  user:\n    token: {token}\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: operator\ncurrent-context: c\n"
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn the_chart_permissions_are_enough_for_the_day_one_flow_and_no_more() {
    let Some(admin) = common::kubeconfig("the install walk-through") else {
        return;
    };
    let Some(helm) = helm() else {
        eprintln!(
            "skipping the install walk-through: helm not found; run scripts/install-test-tools"
        );
        return;
    };
    install_crds(&admin);
    let release_ns = TestNamespace::create(&admin, "scim-system");
    let tenant = TestNamespace::create(&admin, "idp");
    let target = TestNamespace::create(&admin, "analytics");
    let release = format!("so{}", &common::uuid_like()[..8]);
    let fullname = format!("{release}-scim-operator");

    // Render and apply the chart, as `helm install` would without a container runtime.
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/scim-operator");
    let rendered = Command::new(&helm)
        .args(["template", &release, chart, "--namespace", &release_ns.name])
        .args([
            "--set",
            &format!(
                "connections[0].name=default,connections[0].tenant={}",
                tenant.name
            ),
        ])
        .args([
            "--set",
            "connections[0].createNamespace=false",
            "--set",
            "allowedRoles={ClusterRole/view}",
        ])
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let manifests = String::from_utf8(rendered.stdout).unwrap();
    kubectl_ok(
        &admin,
        &["apply", "-n", &release_ns.name, "-f", "-"],
        Some(&manifests),
    );

    // The operator runs with the ServiceAccount's token, outside the cluster.
    let sa_token = kubectl_ok(
        &admin,
        &["create", "token", &fullname, "-n", &release_ns.name],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let operator = token_kubeconfig(&admin, sa_token.trim(), dir.path());
    let idp_token = common::secret_value(
        &admin,
        &release_ns.name,
        &format!("{fullname}-initial-token"),
        "token",
    )
    .expect("the chart's initial token");
    let env = [
        ("KUBECONFIG", operator.as_str()),
        ("SCIM_OPERATOR_ALLOWED_ROLES", "ClusterRole/view"),
    ];
    let ns_flag = format!("--operator-namespace={}", release_ns.name);
    let mut server = start_server(&["run", &ns_flag], &env, dir.path());
    server.token = idp_token.trim().to_string();

    // Day one: Test Connection, user, group, member.
    let (status, empty) = request(
        &server,
        "GET",
        "/Users?filter=userName%20eq%20%22nobody@example.com%22",
        None,
    )
    .unwrap();
    assert_eq!(
        (status, empty["totalResults"].clone()),
        (200, json!(0)),
        "{empty}"
    );
    let (status, user) = request(
        &server,
        "POST",
        "/Users",
        Some(&json!({"userName": "ada@example.com", "active": true})),
    )
    .unwrap();
    assert_eq!(status, 201, "{user}");
    let uid = user["id"].as_str().unwrap().to_string();
    let (status, group) = request(
        &server,
        "POST",
        "/Groups",
        Some(&json!({"displayName": "analysts", "members": [{"value": uid}]})),
    )
    .unwrap();
    assert_eq!(status, 201, "{group}");
    let users = kubectl_ok(&admin, &["get", "scimusers", "-n", &tenant.name], None);
    assert!(
        users.contains("ada@example.com"),
        "the user is not in the connection's tenant: {users}"
    );

    // An admin's policy becomes a RoleBinding written with the operator's own permissions.
    let policy = format!("install-{}", tenant.name);
    let policy_yaml = format!(
        "apiVersion: scim-operator.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: {policy}\nspec:\n  \
         tenant: {}\n  groups: [{{displayName: analysts}}]\n  grants:\n  - clusterRole: view\n    namespaces: [{}]\n",
        tenant.name, target.name
    );
    kubectl_ok(&admin, &["apply", "-f", "-"], Some(&policy_yaml));
    let subjects = || common::policy_binding_subjects(&admin, &target.name, &policy);
    let granted = eventually(Duration::from_secs(15), || {
        subjects() == Some(vec!["ada@example.com".to_string()])
    });
    if !granted {
        server.dump_log();
    }
    assert!(
        granted,
        "no RoleBinding under the chart's permissions: {:?}",
        subjects()
    );

    // What the operator must not be able to do, refused by the API server itself.
    let escalate = kubectl(
        &operator,
        &[
            "create",
            "rolebinding",
            "escalate",
            "-n",
            &target.name,
            "--clusterrole=cluster-admin",
            "--user=ada@example.com",
        ],
        None,
    );
    assert!(
        !escalate.status.success(),
        "the operator's account could bind cluster-admin"
    );
    assert!(
        String::from_utf8_lossy(&escalate.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&escalate.stderr)
    );
    let foreign_secrets = kubectl(&operator, &["get", "secrets", "-n", &target.name], None);
    assert!(
        !foreign_secrets.status.success(),
        "the operator's account could read Secrets of another namespace"
    );
    let own_secrets = kubectl(&operator, &["get", "secrets", "-n", &release_ns.name], None);
    assert!(
        own_secrets.status.success(),
        "token Secrets in its own namespace must be readable"
    );

    // A policy naming a role outside the allow-list grants nothing.
    let admin_policy = policy_yaml
        .replace(&policy, &format!("{policy}-admin"))
        .replace("clusterRole: view", "clusterRole: cluster-admin");
    kubectl_ok(&admin, &["apply", "-f", "-"], Some(&admin_policy));
    std::thread::sleep(Duration::from_secs(2));
    let out = kubectl_ok(
        &admin,
        &[
            "get",
            "rolebindings",
            "-n",
            &target.name,
            "-l",
            &format!("scim-operator.dev/policy={policy}-admin"),
            "-o",
            "name",
        ],
        None,
    );
    assert!(
        out.trim().is_empty(),
        "a binding to cluster-admin appeared: {out}"
    );
    let _ = kubectl(
        &admin,
        &[
            "delete",
            "accesspolicy",
            &policy,
            &format!("{policy}-admin"),
        ],
        None,
    );
    let _ = kubectl(
        &admin,
        &["delete", "clusterrole,clusterrolebinding", &fullname],
        None,
    );
}
