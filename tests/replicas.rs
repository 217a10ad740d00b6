//! Several `scim-operator run` replicas on one real API server: concurrent writes to one
//! group through two replicas lose nothing, and tokens managed through connections are
//! honoured by every replica (revocation at once, pause with Retry-After).
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Server, TestNamespace, eventually, get, install_crds, kubeconfig, request, start_server,
};
use serde_json::json;

fn binary(kubeconfig: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scim-operator"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fifty_concurrent_patches_through_two_replicas_leave_fifty_members() {
    let Some(kubeconfig) = kubeconfig("concurrent writes through two replicas") else {
        return;
    };
    install_crds(&kubeconfig);
    let ns = TestNamespace::create(&kubeconfig, "replicas");
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("SCIM_OPERATOR_TOKEN", "shared-token"),
    ];
    let args = ["run", "--namespace", ns.name.as_str(), "--no-controller"];
    let a = start_server(&args, &env, dir.path());
    let b = start_server(&args, &env, dir.path());

    let mut ids = Vec::new();
    for i in 0..50 {
        let (status, user) = request(
            &a,
            "POST",
            "/Users",
            Some(&json!({"userName": format!("m{i}@example.com")})),
        )
        .unwrap();
        assert_eq!(status, 201, "{user}");
        ids.push(user["id"].as_str().expect("id").to_string());
    }
    let (status, group) = request(
        &a,
        "POST",
        "/Groups",
        Some(&json!({"displayName": "crowd"})),
    )
    .unwrap();
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().expect("id").to_string();
    // Replica b learns of the users and the group through its watch.
    assert!(eventually(Duration::from_secs(10), || {
        get(&b, &format!("/Groups/{gid}")).map(|r| r.0) == Ok(200)
            && ids
                .iter()
                .all(|id| get(&b, &format!("/Users/{id}")).map(|r| r.0) == Ok(200))
    }));

    let servers: Arc<[Server; 2]> = Arc::new([a, b]);
    let threads: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (servers, gid, id) = (servers.clone(), gid.clone(), id.clone());
            std::thread::spawn(move || {
                let body = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
                request(&servers[i % 2], "PATCH", &format!("/Groups/{gid}"), Some(&body)).map(|r| r.0)
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("thread"), Ok(200));
    }
    let count = |server: &Server| {
        get(server, &format!("/Groups/{gid}"))
            .ok()
            .and_then(|(_, g)| g["members"].as_array().map(Vec::len))
    };
    assert_eq!(count(&servers[0]), Some(50));
    assert!(eventually(Duration::from_secs(10), || count(&servers[1]) == Some(50)));
    let live = common::kubectl_ok(
        &kubeconfig,
        &["get", "scimgroups", "-n", &ns.name, "-o", "json"],
        None,
    );
    let live: serde_json::Value = serde_json::from_str(&live).expect("json");
    assert_eq!(
        live["items"][0]["spec"]["members"].as_array().map(Vec::len),
        Some(50)
    );
}

#[test]
fn tokens_of_connections_work_on_every_replica_and_revocation_is_immediate() {
    let Some(kubeconfig) = kubeconfig("connection tokens") else {
        return;
    };
    install_crds(&kubeconfig);
    let operator = TestNamespace::create(&kubeconfig, "operator");
    let tenant = TestNamespace::create(&kubeconfig, "tenant");
    let ns_flag = format!("--operator-namespace={}", operator.name);

    let (ok, out, err) = binary(
        &kubeconfig,
        &[
            "connection",
            &ns_flag,
            "create",
            "okta",
            "--tenant",
            &tenant.name,
        ],
    );
    assert!(ok, "{out}{err}");
    let (ok, token, err) = binary(
        &kubeconfig,
        &["token", &ns_flag, "create", "--connection", "okta"],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("scim_"), "{token}");
    // Only the hash is stored.
    let secrets = common::kubectl_ok(
        &kubeconfig,
        &["get", "secrets", "-n", &operator.name, "-o", "json"],
        None,
    );
    assert!(!secrets.contains(&token), "the token itself was stored");

    let dir = tempfile::tempdir().expect("temp dir");
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let args = ["run", ns_flag.as_str(), "--no-controller"];
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut s = start_server(&args, &env, dir.path());
        s.token = token.clone();
        servers.push(s);
    }
    for s in &servers {
        let (status, body) = request(
            s,
            "POST",
            "/Users",
            Some(&json!({"userName": format!("t-{}@example.com", s.base.len() + servers.len())})),
        )
        .unwrap_or((0, json!(null)));
        assert!(status == 201 || status == 409, "{status} {body}");
    }
    let users = common::kubectl_ok(
        &kubeconfig,
        &["get", "scimusers", "-n", &tenant.name, "-o", "name"],
        None,
    );
    assert!(
        !users.trim().is_empty(),
        "the user landed outside the connection's tenant"
    );

    // Pause: 503 with Retry-After on every replica, then resume.
    let (ok, _, err) = binary(&kubeconfig, &["connection", &ns_flag, "pause", "okta"]);
    assert!(ok, "{err}");
    for s in &servers {
        assert!(eventually(Duration::from_secs(5), || get(s, "/Users")
            .map(|r| r.0)
            == Ok(503)));
        let headers = Command::new("curl")
            .args([
                "-s",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-H",
                &format!("Authorization: Bearer {token}"),
            ])
            .arg(format!("{}/Users", s.base))
            .output()
            .expect("curl");
        assert!(
            String::from_utf8_lossy(&headers.stdout)
                .to_lowercase()
                .contains("retry-after")
        );
    }
    let (ok, _, err) = binary(&kubeconfig, &["connection", &ns_flag, "resume", "okta"]);
    assert!(ok, "{err}");
    for s in &servers {
        assert!(eventually(Duration::from_secs(5), || get(s, "/Users")
            .map(|r| r.0)
            == Ok(200)));
    }

    // A second token works beside the first (rotation), and revoking the first refuses it.
    let (ok, second, err) = binary(
        &kubeconfig,
        &["token", &ns_flag, "create", "--connection", "okta"],
    );
    assert!(ok, "{err}");
    let (ok, list, err) = binary(
        &kubeconfig,
        &["token", &ns_flag, "list", "--connection", "okta"],
    );
    assert!(ok, "{err}");
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    let mut rotated = start_server(&args, &env, dir.path());
    rotated.token = second.trim().to_string();
    assert_eq!(get(&rotated, "/Users").map(|r| r.0), Ok(200));
    drop(rotated);
    let first_hash = hex::encode(scim_operator::scim::auth::hash_token(&token));
    let first_name = names
        .iter()
        .find(|n| {
            common::secret_value(&kubeconfig, &operator.name, n, "sha256").as_deref()
                == Some(first_hash.as_str())
        })
        .expect("the first token's Secret")
        .clone();
    let (ok, _, err) = binary(&kubeconfig, &["token", &ns_flag, "revoke", &first_name]);
    assert!(ok, "{err}");
    for s in &servers {
        assert!(
            eventually(Duration::from_secs(2), || get(s, "/Users").map(|r| r.0)
                == Ok(401)),
            "a revoked token was still accepted"
        );
    }
}
