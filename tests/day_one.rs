//! The README's day-one walk, step by step: a JumpCloud-style Test Connection, a user, a
//! group, the membership, an AccessPolicy, the RoleBinding, and the subject gone after
//! deactivation. Run against the local mode and against `scim-operator run` on a real API
//! server.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::time::Duration;

use common::{
    Server, TestNamespace, eventually, get, install_crds, kubectl_ok, request, start_server,
};
use serde_json::{Value, json};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The SCIM side of the walk; returns the user's id.
struct Walk {
    user_id: String,
    group_id: String,
}

fn provision(server: &Server, user_name: &str, group: &str) -> Walk {
    // Test Connection: the lookup of an unknown user answers an empty list, not 404.
    let (status, body) = get(
        server,
        &format!("/Users?filter=userName%20eq%20%22test-{user_name}%22"),
    )
    .unwrap();
    assert_eq!(
        (status, body["totalResults"].clone()),
        (200, json!(0)),
        "{body}"
    );

    let (status, user) = request(
        server,
        "POST",
        "/Users",
        Some(&json!({
            "schemas": [USER_SCHEMA],
            "userName": user_name,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "active": true,
        })),
    )
    .unwrap();
    assert_eq!(status, 201, "{user}");
    let user_id = user["id"].as_str().expect("an id").to_string();

    let (status, created) = request(
        server,
        "POST",
        "/Groups",
        Some(&json!({"schemas": [GROUP_SCHEMA], "displayName": group})),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let group_id = created["id"].as_str().expect("an id").to_string();

    let add = json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
    });
    let (status, patched) =
        request(server, "PATCH", &format!("/Groups/{group_id}"), Some(&add)).unwrap();
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["members"][0]["value"], json!(user_id));
    Walk { user_id, group_id }
}

fn deactivate(server: &Server, user_id: &str) {
    let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, user) =
        request(server, "PATCH", &format!("/Users/{user_id}"), Some(&body)).unwrap();
    assert_eq!(
        (status, user["active"].clone()),
        (200, json!(false)),
        "{user}"
    );
}

fn policy_yaml(name: &str, tenant: &str, group: &str, namespace: &str) -> String {
    format!(
        "apiVersion: scim-operator.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: {name}\n\
         spec:\n  tenant: {tenant}\n  groups:\n    - displayName: {group}\n  grants:\n    \
         - clusterRole: view\n      namespaces: [{namespace}]\n"
    )
}

fn subjects_of(binding: &Value) -> Vec<String> {
    binding["subjects"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_day_one_walk_works_in_the_local_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = start_server(
        &["local", "--data", data.to_str().expect("utf-8")],
        &[],
        dir.path(),
    );
    let walk = provision(&server, "ada@example.com", "analysts");

    std::fs::create_dir_all(data.join("policies")).expect("policies folder");
    std::fs::write(
        data.join("policies/analysts.yaml"),
        policy_yaml("analysts-view", "default", "analysts", "analytics"),
    )
    .expect("policy written");
    let binding_file = data.join("output/rolebinding/analytics/scim-analysts-view-c-view.yaml");
    let read_subjects = || -> Vec<String> {
        std::fs::read_to_string(&binding_file)
            .ok()
            .and_then(|text| serde_norway::from_str::<Value>(&text).ok())
            .map(|b| subjects_of(&b))
            .unwrap_or_default()
    };
    let granted = eventually(Duration::from_secs(10), || {
        read_subjects() == ["ada@example.com"]
    });
    if !granted {
        server.dump_log();
    }
    assert!(
        granted,
        "the binding never named the member: {:?}",
        read_subjects()
    );

    deactivate(&server, &walk.user_id);
    assert!(
        eventually(Duration::from_secs(5), || read_subjects().is_empty()),
        "the deactivated user kept the binding: {:?}",
        read_subjects()
    );
    // The membership record stays; only the access goes.
    let (_, group) = get(&server, &format!("/Groups/{}", walk.group_id)).unwrap();
    assert_eq!(group["members"][0]["value"], json!(walk.user_id));
}

#[test]
fn the_day_one_walk_works_against_a_real_api_server() {
    let Some(kubeconfig) = common::kubeconfig("the day-one walk against scim-operator run") else {
        return;
    };
    install_crds(&kubeconfig);
    let tenant = TestNamespace::create(&kubeconfig, "idp");
    let target = TestNamespace::create(&kubeconfig, "analytics");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        &["run", "--namespace", &tenant.name],
        &[("KUBECONFIG", &kubeconfig)],
        dir.path(),
    );
    let walk = provision(&server, "ada@example.com", "analysts");

    let policy = format!("day-one-{}", tenant.name);
    kubectl_ok(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some(&policy_yaml(
            &policy,
            &tenant.name,
            "analysts",
            &target.name,
        )),
    );
    let read_subjects = || common::policy_binding_subjects(&kubeconfig, &target.name, &policy);
    let granted = eventually(Duration::from_secs(15), || {
        read_subjects() == Some(vec!["ada@example.com".into()])
    });
    if !granted {
        server.dump_log();
    }
    assert!(
        granted,
        "the RoleBinding never named the member: {:?}",
        read_subjects()
    );

    // What an admin checks with kubectl.
    let listing = kubectl_ok(
        &kubeconfig,
        &["get", "scimusers,scimgroups,rolebindings", "-A"],
        None,
    );
    assert!(listing.contains("ada@example.com"), "{listing}");
    assert!(listing.contains("analysts"), "{listing}");
    let groups = kubectl_ok(
        &kubeconfig,
        &["get", "scimgroups", "-n", &tenant.name, "-o", "json"],
        None,
    );
    assert!(
        groups.contains(&walk.user_id),
        "the group does not list its member: {groups}"
    );

    deactivate(&server, &walk.user_id);
    assert!(
        eventually(Duration::from_secs(5), || read_subjects() == Some(vec![])),
        "the deactivated user kept the binding: {:?}",
        read_subjects()
    );

    // Deleting the policy removes its bindings (owner references, garbage collector).
    kubectl_ok(&kubeconfig, &["delete", "accesspolicy", &policy], None);
    assert!(
        eventually(Duration::from_secs(30), || read_subjects().is_none()),
        "the binding outlived its policy"
    );
}
