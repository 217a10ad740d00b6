//! Operating `scim-operator run` on a real API server: leader election across replicas
//! (handover after a crash and after SIGTERM), the metrics endpoint and the probes.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Server, TestNamespace, eventually, free_port, get, install_crds, kubeconfig, kubectl,
    kubectl_ok, request, start_server, uuid_like,
};
use serde_json::{Value, json};

/// The longest handover the tests accept after a holder dies: the 15-second Lease plus one
/// look at it.
const CRASH_HANDOVER: Duration = Duration::from_secs(20);
/// The longest handover the tests accept after a holder releases the Lease on SIGTERM.
const RELEASE_HANDOVER: Duration = Duration::from_secs(5);

/// One `scim-operator run` replica with its metrics address.
struct Replica {
    server: Server,
    metrics: String,
}

impl Replica {
    fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// GET on the metrics listener: the status and the body, or `None` when it does not
    /// answer.
    fn probe(&self, path: &str) -> Option<(u16, String)> {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.metrics))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n')?;
        Some((status.trim().parse().ok()?, body.to_string()))
    }

    /// The value of a sample without labels, such as `scim_operator_is_leader`.
    fn sample(&self, name: &str) -> Option<f64> {
        let (_, text) = self.probe("/metrics")?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    fn is_leader(&self) -> bool {
        self.sample("scim_operator_is_leader") == Some(1.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.server.log).unwrap_or_default()
    }
}

/// Starts `scim-operator run` for `tenant`, electing through `lease` in `operator`.
fn start_replica(
    kubeconfig: &str,
    tenant: &str,
    election: Option<(&str, &str)>,
    dir: &std::path::Path,
) -> Replica {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["run", "--namespace", tenant, "--metrics-listen", &metrics];
    if let Some((operator, lease)) = election {
        args.extend([
            "--operator-namespace",
            operator,
            "--leader-election",
            "--lease-name",
            lease,
        ]);
    }
    let env = [
        ("KUBECONFIG", kubeconfig),
        ("SCIM_OPERATOR_TOKEN", "operations-test-token"),
    ];
    let server = start_server(&args, &env, dir);
    Replica { server, metrics }
}

fn lease_holder(kubeconfig: &str, operator: &str, lease: &str) -> Option<String> {
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            "lease",
            lease,
            "-n",
            operator,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    let holder = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

/// Whether a holder identity (`host_pid_suffix`) names the process `pid`.
fn names_process(holder: &str, pid: u32) -> bool {
    holder.split('_').nth(1) == Some(pid.to_string().as_str())
}

/// Waits until exactly one replica reports leading, and returns its index.
fn await_single_leader(replicas: &[&Replica], timeout: Duration) -> Option<usize> {
    let mut leader = None;
    eventually(timeout, || {
        let leading: Vec<usize> = (0..replicas.len())
            .filter(|i| replicas[*i].is_leader())
            .collect();
        leader = (leading.len() == 1).then(|| leading[0]);
        leader.is_some()
    });
    leader
}

/// A cluster-scoped AccessPolicy, deleted on drop.
struct Policy {
    name: String,
    kubeconfig: String,
}

impl Policy {
    fn apply(kubeconfig: &str, name: &str, tenant: &str, group: &str, target: &str) -> Self {
        let yaml = format!(
            "apiVersion: scim-operator.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: \
             {name}\nspec:\n  tenant: {tenant}\n  groups:\n    - displayName: {group}\n  \
             grants:\n    - clusterRole: view\n      namespaces: [{target}]\n"
        );
        kubectl_ok(kubeconfig, &["apply", "-f", "-"], Some(&yaml));
        Self {
            name: name.to_string(),
            kubeconfig: kubeconfig.to_string(),
        }
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.kubeconfig,
            &["delete", "accesspolicy", &self.name, "--wait=false"],
            None,
        );
    }
}

/// Creates a user and a group holding it through SCIM.
fn provision(server: &Server, user_name: &str, group: &str) {
    let (status, user) = request(
        server,
        "POST",
        "/Users",
        Some(&json!({"userName": user_name, "active": true})),
    )
    .unwrap();
    assert_eq!(status, 201, "{user}");
    let members = json!([{"value": user["id"]}]);
    let (status, created) = request(
        server,
        "POST",
        "/Groups",
        Some(&json!({"displayName": group, "members": members})),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
}

/// The subjects of the one RoleBinding of `policy` in `namespace`.
fn bound_subjects(kubeconfig: &str, namespace: &str, policy: &str) -> Option<Vec<String>> {
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            "rolebindings",
            "-n",
            namespace,
            "-l",
            &format!("scim-operator.dev/policy={policy}"),
            "-o",
            "json",
        ],
        None,
    );
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    let items = list["items"].as_array()?;
    let binding = (items.len() == 1).then(|| items[0].clone())?;
    let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
    Some(
        subjects
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect(),
    )
}

#[test]
fn another_replica_takes_over_and_reconciles_within_the_lease_time_after_the_leader_is_killed() {
    let Some(kubeconfig) = kubeconfig("leader handover after a crash") else {
        return;
    };
    install_crds(&kubeconfig);
    let operator = TestNamespace::create(&kubeconfig, "ops-operator");
    let tenant = TestNamespace::create(&kubeconfig, "ops-idp");
    let target = TestNamespace::create(&kubeconfig, "ops-target");
    let lease = format!("ops-leader-{}", &uuid_like()[..10]);
    let dir = tempfile::tempdir().expect("temp dir");
    let election = Some((operator.name.as_str(), lease.as_str()));
    let a = start_replica(&kubeconfig, &tenant.name, election, dir.path());
    let b = start_replica(&kubeconfig, &tenant.name, election, dir.path());

    // Exactly one leads, and the Lease names it.
    let leader = await_single_leader(&[&a, &b], Duration::from_secs(30));
    let (mut leader, follower) = match leader {
        Some(0) => (a, b),
        Some(_) => (b, a),
        None => {
            a.server.dump_log();
            b.server.dump_log();
            panic!("no single leader emerged");
        }
    };
    let holder = lease_holder(&kubeconfig, &operator.name, &lease).unwrap_or_default();
    assert!(
        names_process(&holder, leader.pid()),
        "the Lease names {holder:?}, not the leader (pid {})",
        leader.pid()
    );
    assert!(!follower.is_leader());
    assert!(
        !follower.log().contains("policy reconciled"),
        "a follower reconciled"
    );

    // Crash: SIGKILL, so nothing is released.
    leader.server.child.kill().unwrap();
    leader.server.child.wait().unwrap();
    let killed = Instant::now();
    let took_over = eventually(CRASH_HANDOVER + Duration::from_secs(10), || {
        follower.is_leader()
    });
    let handover = killed.elapsed();
    eprintln!("handover after SIGKILL took {handover:?}");
    if !took_over {
        follower.server.dump_log();
    }
    assert!(took_over, "the follower never took over");
    assert!(handover <= CRASH_HANDOVER, "the handover took {handover:?}");
    let holder = lease_holder(&kubeconfig, &operator.name, &lease).unwrap_or_default();
    assert!(
        names_process(&holder, follower.pid()),
        "the Lease names {holder:?}, not the new leader (pid {})",
        follower.pid()
    );

    // Reconcile: a policy created after the crash gets its RoleBinding from the new leader.
    provision(&follower.server, "grace@example.com", "operators");
    let policy = Policy::apply(
        &kubeconfig,
        &format!("ops-{}", tenant.name),
        &tenant.name,
        "operators",
        &target.name,
    );
    let granted = eventually(Duration::from_secs(20), || {
        bound_subjects(&kubeconfig, &target.name, &policy.name)
            == Some(vec!["grace@example.com".to_string()])
    });
    if !granted {
        follower.server.dump_log();
    }
    assert!(granted, "the RoleBinding never appeared");
    let reconciled_here = follower
        .log()
        .lines()
        .any(|line| line.contains("policy reconciled") && line.contains(&policy.name));
    assert!(
        reconciled_here,
        "the new leader did not reconcile the policy"
    );
}

#[test]
fn a_leader_stopped_with_sigterm_releases_the_lease_for_a_fast_handover() {
    let Some(kubeconfig) = kubeconfig("leader handover on SIGTERM") else {
        return;
    };
    install_crds(&kubeconfig);
    let operator = TestNamespace::create(&kubeconfig, "ops-operator");
    let tenant = TestNamespace::create(&kubeconfig, "ops-idp");
    let lease = format!("ops-leader-{}", &uuid_like()[..10]);
    let dir = tempfile::tempdir().expect("temp dir");
    let election = Some((operator.name.as_str(), lease.as_str()));
    let a = start_replica(&kubeconfig, &tenant.name, election, dir.path());
    let b = start_replica(&kubeconfig, &tenant.name, election, dir.path());
    let leader = await_single_leader(&[&a, &b], Duration::from_secs(30));
    let (mut leader, follower) = match leader {
        Some(0) => (a, b),
        Some(_) => (b, a),
        None => panic!("no single leader emerged"),
    };

    // Stop: SIGTERM to the leader's pid; it drains, stops its controller and releases.
    let pid = leader.pid().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let stopped = Instant::now();
    let took_over = eventually(RELEASE_HANDOVER, || follower.is_leader());
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM took {handover:?}");
    let exited = eventually(Duration::from_secs(30), || {
        matches!(leader.server.child.try_wait(), Ok(Some(_)))
    });

    assert!(
        took_over,
        "the follower did not take over within {RELEASE_HANDOVER:?}"
    );
    assert!(exited, "the old leader did not exit after SIGTERM");
    let status = leader.server.child.wait().unwrap();
    assert!(status.success(), "the old leader exited with {status}");
    assert!(
        leader.log().contains("leadership released"),
        "the old leader did not release the Lease"
    );
}

#[test]
fn metrics_count_requests_by_route_kind_and_never_show_ids_or_tokens() {
    let Some(kubeconfig) = kubeconfig("the metrics of SCIM requests") else {
        return;
    };
    install_crds(&kubeconfig);
    let tenant = TestNamespace::create(&kubeconfig, "ops-metrics");
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = start_replica(&kubeconfig, &tenant.name, None, dir.path());
    let server = &replica.server;

    let (status, user) = request(
        server,
        "POST",
        "/Users",
        Some(&json!({"userName": "ada@example.com"})),
    )
    .unwrap();
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().expect("an id").to_string();
    assert_eq!(get(server, &format!("/Users/{id}")).unwrap().0, 200);
    assert_eq!(get(server, "/Users/no-such-user").unwrap().0, 404);
    assert_eq!(get(server, "/Groups").unwrap().0, 200);
    let refused = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/Users", server.base))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");

    let (status, text) = replica.probe("/metrics").expect("metrics answer");

    assert_eq!(status, 200);
    for expected in [
        r#"scim_requests_total{method="POST",resource="Users",status="201"} 1"#,
        r#"scim_requests_total{method="GET",resource="Users",status="200"} 1"#,
        r#"scim_requests_total{method="GET",resource="Users",status="404"} 1"#,
        r#"scim_requests_total{method="GET",resource="Users",status="401"} 1"#,
        r#"scim_requests_total{method="GET",resource="Groups",status="200"} 1"#,
        r#"scim_request_duration_seconds_count{method="GET",resource="Users"} 3"#,
        r#"scim_operator_last_successful_write_timestamp_seconds{connection="static"}"#,
        "scim_operator_is_leader 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains(&id), "a user id became a label");
    assert!(!text.contains("no-such-user"), "a path became a label");
    assert!(!text.contains(&server.token), "the token is in the metrics");
}

#[test]
fn readyz_answers_200_once_tokens_and_indexes_are_loaded() {
    let Some(kubeconfig) = kubeconfig("the readiness probe") else {
        return;
    };
    install_crds(&kubeconfig);
    let operator = TestNamespace::create(&kubeconfig, "ops-operator");
    let tenant = TestNamespace::create(&kubeconfig, "ops-ready");
    let lease = format!("ops-leader-{}", &uuid_like()[..10]);
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = start_replica(
        &kubeconfig,
        &tenant.name,
        Some((&operator.name, &lease)),
        dir.path(),
    );

    let ready = eventually(Duration::from_secs(10), || {
        replica.probe("/readyz").map(|(status, _)| status) == Some(200)
    });

    assert!(ready, "/readyz: {:?}", replica.probe("/readyz"));
    assert_eq!(replica.probe("/healthz").map(|(s, _)| s), Some(200));
    // The SCIM API answers as soon as the probe says so.
    assert_eq!(
        get(&replica.server, "/ServiceProviderConfig").unwrap().0,
        200
    );
}
