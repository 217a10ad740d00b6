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

/// Creates `count` users through /Bulk and returns their ids.
fn bulk_users(server: &Server, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let ops: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                json!({"method": "POST", "path": "/Users", "bulkId": format!("u{i}"),
                       "data": {"userName": format!("{prefix}{i}@example.com")}})
            })
            .collect();
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
        let (status, answer) = request(server, "POST", "/Bulk", Some(&body)).unwrap();
        assert_eq!(status, 200, "{answer}");
        for op in answer["Operations"].as_array().unwrap() {
            assert_eq!(op["status"], json!("201"), "{op}");
            let location = op["location"].as_str().unwrap();
            ids.push(location.rsplit('/').next().unwrap().to_string());
        }
    }
    ids
}

#[test]
fn concurrent_changes_to_a_sharded_group_and_racing_renames_lose_nothing() {
    let Some(kubeconfig) = kubeconfig("concurrent writes to a sharded group") else {
        return;
    };
    install_crds(&kubeconfig);
    let ns = TestNamespace::create(&kubeconfig, "bigrace");
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("SCIM_OPERATOR_TOKEN", "race-token"),
    ];
    let server = Arc::new(start_server(
        &["run", "--namespace", ns.name.as_str(), "--no-controller"],
        &env,
        dir.path(),
    ));

    let ids = bulk_users(&server, "big", 1_100);
    let (members, extra) = ids.split_at(1_080);
    let value: Vec<serde_json::Value> = members.iter().map(|id| json!({"value": id})).collect();
    let (status, group) = request(
        &server,
        "POST",
        "/Groups",
        Some(&json!({"displayName": "everyone", "members": value})),
    )
    .unwrap();
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().unwrap().to_string();
    let shards = common::kubectl_ok(
        &kubeconfig,
        &["get", "scimgroupmembers", "-n", &ns.name, "-o", "name"],
        None,
    );
    assert!(
        shards.lines().count() > 1,
        "the group is not sharded: {shards}"
    );

    // Twenty additions and ten removals at once.
    let mut threads = Vec::new();
    for id in extra {
        let (server, gid, id) = (server.clone(), gid.clone(), id.clone());
        threads.push(std::thread::spawn(move || {
            let body =
                json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
            request(&server, "PATCH", &format!("/Groups/{gid}"), Some(&body)).map(|r| r.0)
        }));
    }
    for id in &members[..10] {
        let (server, gid, id) = (server.clone(), gid.clone(), id.clone());
        threads.push(std::thread::spawn(move || {
            let body = json!({"Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]});
            request(&server, "PATCH", &format!("/Groups/{gid}"), Some(&body)).map(|r| r.0)
        }));
    }
    for thread in threads {
        assert_eq!(thread.join().unwrap(), Ok(200));
    }
    let stored = || -> usize {
        let out = common::kubectl_ok(
            &kubeconfig,
            &["get", "scimgroupmembers", "-n", &ns.name, "-o", "json"],
            None,
        );
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut all: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["spec"]["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["value"].as_str().map(str::to_string))
            .collect();
        all.sort();
        all.dedup();
        all.len()
    };
    assert_eq!(
        stored(),
        1_080 + 20 - 10,
        "members were lost or duplicated in the shards"
    );
    let (_, read) = get(&server, &format!("/Groups/{gid}")).unwrap();
    assert_eq!(read["members"].as_array().map(Vec::len), Some(1_090));

    // Twelve renames at once: one object for the id remains, under a name that answered 200.
    let mut threads = Vec::new();
    for i in 0..12 {
        let (server, gid) = (server.clone(), gid.clone());
        threads.push(std::thread::spawn(move || {
            let name = format!("everyone-{}", i % 3);
            let body =
                json!({"Operations": [{"op": "replace", "path": "displayName", "value": name}]});
            request(&server, "PATCH", &format!("/Groups/{gid}"), Some(&body)).map(|r| (r.0, name))
        }));
    }
    let outcomes: Vec<(u16, String)> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert!(
        outcomes.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{outcomes:?}"
    );
    let objects = common::kubectl_ok(
        &kubeconfig,
        &["get", "scimgroups", "-n", &ns.name, "-o", "json"],
        None,
    );
    let objects: serde_json::Value = serde_json::from_str(&objects).unwrap();
    let with_id: Vec<&serde_json::Value> = objects["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["spec"]["id"] == json!(gid))
        .collect();
    assert_eq!(with_id.len(), 1, "renames left several objects for one id");
    let final_name = with_id[0]["spec"]["displayName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        outcomes.iter().any(|(s, n)| *s == 200 && *n == final_name),
        "{final_name} {outcomes:?}"
    );
    assert_eq!(stored(), 1_090, "a rename lost members");
}
