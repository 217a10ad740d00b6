//! The Helm chart in `charts/scim-operator`: it lints, renders least-privilege RBAC and a
//! hardened Deployment, rejects bad values, ships the generated CRDs, keeps the initial token
//! across upgrades, and renders manifests that a real API server accepts.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::{TestNamespace, kubeconfig, kubectl, kubectl_ok, uuid_like};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/scim-operator");
const DEFAULT_VALUES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/scim-operator/values.yaml"
);
const FULL_VALUES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/scim-operator/ci/full-values.yaml"
);
const CHART_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/scim-operator/crds/scim-operator.yaml"
);
const REPO_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/scim-operator.yaml");

/// The release name of offline renders; it contains the chart name, so objects are named
/// plainly `scim-operator`.
const RELEASE: &str = "scim-operator";
const RELEASE_NAMESPACE: &str = "scim-system";

/// Offline renders target the oldest Kubernetes the chart supports, which also makes them
/// independent of the Kubernetes version a given helm binary assumes.
const MIN_KUBE_VERSION: &str = "1.30.0";

/// The helm binary on PATH, else the one `scripts/install-test-tools` installs; `None` (and a
/// message saying the test skips) when there is neither.
fn helm() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("helm"))
            .find(|path| path.is_file())
    });
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/tools/bin/helm");
    let found = on_path.or_else(|| installed.is_file().then_some(installed));
    if found.is_none() {
        eprintln!("skipping: helm not found; run scripts/install-test-tools");
    }
    found
}

fn run(helm: &Path, args: &[&str], kubeconfig: Option<&str>) -> Output {
    let mut command = Command::new(helm);
    command.args(args);
    if let Some(path) = kubeconfig {
        command.env("KUBECONFIG", path);
    }
    command.output().expect("helm runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_ok(helm: &Path, args: &[&str], kubeconfig: Option<&str>) -> String {
    let out = run(helm, args, kubeconfig);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).expect("helm prints utf-8")
}

/// `helm template` of the chart, offline, with extra arguments (values files, --set).
fn template(helm: &Path, namespace: &str, extra: &[&str]) -> Output {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", namespace];
    args.extend(["--kube-version", MIN_KUBE_VERSION]);
    args.extend(extra);
    run(helm, &args, None)
}

/// The rendered objects, one JSON value per YAML document.
fn render(helm: &Path, extra: &[&str]) -> Vec<Value> {
    let out = template(helm, RELEASE_NAMESPACE, extra);
    assert!(
        out.status.success(),
        "helm template {extra:?} failed:\n{}",
        stderr(&out)
    );
    parse_documents(&String::from_utf8(out.stdout).expect("helm prints utf-8"))
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("helm renders valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} was rendered"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

/// `allowedRoles` of a values file.
fn allowed_roles(values_file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(values_file).expect("the values file exists");
    let values: Value = serde_norway::from_str(&text).expect("the values file is YAML");
    let roles = values["allowedRoles"]
        .as_array()
        .expect("allowedRoles is a list");
    roles
        .iter()
        .map(|r| r.as_str().expect("roles are strings").to_string())
        .collect()
}

/// The names of one kind ("ClusterRole" or "Role") in an allowedRoles list.
fn role_names(roles: &[String], kind: &str) -> BTreeSet<String> {
    roles
        .iter()
        .filter_map(|role| role.split_once('/'))
        .filter(|(k, _)| *k == kind)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The resourceNames the RBAC rules grant `bind` on, for one resource.
fn bind_names(rules: &[Value], resource: &str) -> BTreeSet<String> {
    rules
        .iter()
        .filter(|rule| rule["verbs"] == serde_json::json!(["bind"]))
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .is_some_and(|r| r.contains(&resource.into()))
        })
        .flat_map(|rule| {
            rule["resourceNames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|name| {
            name.as_str()
                .expect("resource names are strings")
                .to_string()
        })
        .collect()
}

fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    let env = container["env"].as_array().expect("the container has env");
    env.iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("the container has no env var {name}"))
}

fn secret_data(secret: &Value, key: &str) -> String {
    let encoded = secret["data"][key]
        .as_str()
        .expect("the secret has the key");
    String::from_utf8(base64_decode(encoded)).expect("the secret value is utf-8")
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut held, mut out) = (0u32, 0u32, Vec::new());
    for byte in text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
    {
        let value = ALPHABET
            .iter()
            .position(|c| *c == byte)
            .expect("valid base64");
        bits = (bits << 6) | u32::try_from(value).expect("a 6-bit value");
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push(u8::try_from(bits >> held).expect("a byte"));
            bits &= (1 << held) - 1;
        }
    }
    out
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[test]
fn the_chart_lints_with_default_and_full_values() {
    let Some(helm) = helm() else {
        return;
    };
    let lint = [
        "lint",
        "--strict",
        CHART,
        "--kube-version",
        MIN_KUBE_VERSION,
    ];
    run_ok(&helm, &lint, None);
    run_ok(&helm, &[&lint[..], &["-f", FULL_VALUES][..]].concat(), None);
}

#[test]
fn rbac_has_no_wildcard_and_binds_exactly_the_allowed_roles() {
    let Some(helm) = helm() else {
        return;
    };
    for (values_file, extra) in [
        (DEFAULT_VALUES, vec![]),
        (FULL_VALUES, vec!["-f", FULL_VALUES]),
    ] {
        let objects = render(&helm, &extra);
        let cluster_role = find(&objects, "ClusterRole", RELEASE);
        let role = find(&objects, "Role", RELEASE);
        for rbac in [cluster_role, role] {
            let rules = serde_json::to_string(&rbac["rules"]).expect("rules serialize");
            assert!(!rules.contains('*'), "a wildcard in {values_file}: {rules}");
        }

        // Secrets are reachable only through the Role in the release namespace.
        let cluster_rules = cluster_role["rules"]
            .as_array()
            .expect("the ClusterRole has rules");
        let cluster_resources = serde_json::to_string(cluster_rules).expect("rules serialize");
        assert!(
            !cluster_resources.contains("secrets"),
            "the ClusterRole grants secrets"
        );
        assert_eq!(role["metadata"]["namespace"], RELEASE_NAMESPACE);

        // `bind` covers exactly allowedRoles, and a kind without entries has no rule at all.
        let roles = allowed_roles(values_file);
        let bind_cluster_roles = bind_names(cluster_rules, "clusterroles");
        let bind_roles = bind_names(cluster_rules, "roles");
        assert_eq!(
            bind_cluster_roles,
            role_names(&roles, "ClusterRole"),
            "{values_file}"
        );
        assert_eq!(bind_roles, role_names(&roles, "Role"), "{values_file}");
        let bind_rules = cluster_rules
            .iter()
            .filter(|r| r["verbs"] == serde_json::json!(["bind"]));
        assert!(
            bind_rules
                .clone()
                .all(|rule| rule["resourceNames"].is_array())
        );
        let kinds_with_names =
            usize::from(!bind_cluster_roles.is_empty()) + usize::from(!bind_roles.is_empty());
        assert_eq!(bind_rules.count(), kinds_with_names, "{values_file}");
    }
}

#[test]
fn every_rbac_rule_in_the_templates_says_why() {
    for file in ["clusterrole.yaml", "role.yaml"] {
        let path = format!("{CHART}/templates/{file}");
        let text = std::fs::read_to_string(&path).expect("the template exists");
        let mut previous = "";
        for line in text.lines().map(str::trim) {
            if line.starts_with("- apiGroups:") {
                assert!(
                    previous.starts_with('#'),
                    "a rule without a comment in {file}: {line}"
                );
            }
            // Template directives between a comment and its rule do not count as lines.
            if !line.starts_with("{{") {
                previous = line;
            }
        }
    }
}

#[test]
fn the_deployment_runs_two_hardened_replicas_with_the_operator_settings() {
    let Some(helm) = helm() else {
        return;
    };
    let objects = render(&helm, &[]);
    let deployment = find(&objects, "Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["requests"].is_object());
    assert!(container["resources"]["limits"].is_object());

    // Every replica serves SCIM and metrics; probes use the metrics port.
    assert_eq!(container["command"], serde_json::json!(["scim-operator"]));
    assert_eq!(container["args"], serde_json::json!(["run"]));
    let ports = serde_json::json!([
        {"name": "scim", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]);
    assert_eq!(container["ports"], ports);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");

    // The settings the operator reads from its environment.
    let value = |name| env_var(container, name)["value"].clone();
    assert_eq!(value("SCIM_OPERATOR_LISTEN"), "0.0.0.0:8080");
    assert_eq!(value("SCIM_OPERATOR_METRICS_LISTEN"), "0.0.0.0:9090");
    assert_eq!(value("SCIM_OPERATOR_LEADER_ELECTION"), "true");
    assert_eq!(value("SCIM_OPERATOR_LEASE_NAME"), "scim-operator-leader");
    assert_eq!(value("SCIM_OPERATOR_ALLOWED_ROLES"), "ClusterRole/view");
    assert_eq!(value("SCIM_OPERATOR_LOG_FORMAT"), "json");
    assert_eq!(value("SCIM_OPERATOR_MAX_PAGE_SIZE"), "1000");
    let namespace = &env_var(container, "SCIM_OPERATOR_OPERATOR_NAMESPACE")["valueFrom"];
    assert_eq!(namespace["fieldRef"]["fieldPath"], "metadata.namespace");
    let env = container["env"].as_array().expect("env is a list");
    assert!(!env.iter().any(|e| e["name"] == "SCIM_OPERATOR_PUBLIC_URL"));

    // Two replicas get a disruption budget; the Lease the Role narrows to is the one in use.
    let budget = find(&objects, "PodDisruptionBudget", RELEASE);
    assert_eq!(budget["spec"]["minAvailable"], 1);
    let role = find(&objects, "Role", RELEASE);
    let lease_rule = role["rules"]
        .as_array()
        .expect("the Role has rules")
        .iter()
        .find(|rule| rule["resourceNames"].is_array())
        .expect("the lease rule names its Lease");
    assert_eq!(
        lease_rule["resourceNames"],
        serde_json::json!(["scim-operator-leader"])
    );
}

#[test]
fn full_values_publish_scim_through_a_tls_ingress_and_set_the_public_url() {
    let Some(helm) = helm() else {
        return;
    };
    let objects = render(&helm, &["-f", FULL_VALUES]);
    let deployment = find(&objects, "Deployment", RELEASE);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let url = &env_var(container, "SCIM_OPERATOR_PUBLIC_URL")["value"];
    assert_eq!(url, "https://scim.example.com/scim/v2");
    let roles = &env_var(container, "SCIM_OPERATOR_ALLOWED_ROLES")["value"];
    assert_eq!(
        roles,
        "ClusterRole/view,ClusterRole/edit,Role/reader,Role/data-analyst"
    );

    let ingress = find(&objects, "Ingress", RELEASE);
    assert_eq!(
        ingress["spec"]["tls"][0]["secretName"],
        "scim-example-com-tls"
    );
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["path"], "/scim/v2");
    assert_eq!(path["backend"]["service"]["port"]["name"], "http");
    for kind in ["NetworkPolicy", "ServiceMonitor", "PodDisruptionBudget"] {
        find(&objects, kind, RELEASE);
    }

    // Both connections get a ConfigMap; only the one that asks gets a namespace.
    for (name, tenant, state) in [
        ("okta", "scim-okta", "active"),
        ("entra", "scim-entra", "paused"),
    ] {
        let connection = find(&objects, "ConfigMap", &format!("scim-connection-{name}"));
        assert_eq!(
            connection["data"],
            serde_json::json!({"tenant": tenant, "state": state})
        );
    }
    let namespaces: Vec<_> = of_kind(&objects, "Namespace")
        .map(|n| &n["metadata"]["name"])
        .collect();
    assert_eq!(namespaces, ["scim-okta"]);
}

#[test]
fn one_replica_gets_no_disruption_budget() {
    let Some(helm) = helm() else {
        return;
    };
    let objects = render(&helm, &["--set", "replicaCount=1"]);
    assert_eq!(of_kind(&objects, "PodDisruptionBudget").count(), 0);
}

#[test]
fn the_initial_token_is_stored_as_a_hash_and_its_plaintext_apart() {
    let Some(helm) = helm() else {
        return;
    };
    let objects = render(&helm, &[]);
    let plaintext = find(&objects, "Secret", "scim-operator-initial-token");
    let token = secret_data(plaintext, "token");
    let random = token
        .strip_prefix("scim_")
        .expect("tokens start with scim_");
    assert_eq!(random.len(), 48);
    assert!(random.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");

    let hashed = find(&objects, "Secret", "scim-operator-initial-token-sha256");
    assert_eq!(secret_data(hashed, "sha256"), sha256_hex(&token));
    assert_eq!(
        hashed["data"].as_object().map(|d| d.len()),
        Some(1),
        "only the hash is stored"
    );
    let labels = &hashed["metadata"]["labels"];
    assert_eq!(labels["scim-operator.dev/token"], "true");
    assert_eq!(labels["scim-operator.dev/connection"], "default");

    let connection = find(&objects, "ConfigMap", "scim-connection-default");
    assert_eq!(
        connection["metadata"]["labels"]["scim-operator.dev/connection"],
        "default"
    );
    assert_eq!(
        connection["data"],
        serde_json::json!({"tenant": "scim-default", "state": "active"})
    );
    let tenant = find(&objects, "Namespace", "scim-default");
    assert_eq!(
        tenant["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
}

#[test]
fn the_values_schema_rejects_bad_values() {
    let Some(helm) = helm() else {
        return;
    };
    let bad = [
        ["--set", "replicaCount=-1"],
        ["--set-json", "allowedRoles=[]"],
        ["--set", "allowedRoles={ClusterRole/*}"],
        ["--set", "allowedRoles={view}"],
        ["--set", "logFormat=xml"],
        ["--set", "userPrefix=system:"],
        ["--set", "ingress.enabled=true"],
        ["--set", "unknownKey=1"],
    ];
    for args in bad {
        let out = template(&helm, RELEASE_NAMESPACE, &args);
        assert!(!out.status.success(), "helm template {args:?} was accepted");
        assert!(
            stderr(&out).contains("schema"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // What the schema cannot say, the templates check.
    let shared_tenant = r#"connections=[{"name":"a","tenant":"t"},{"name":"b","tenant":"t"}]"#;
    let out = template(&helm, RELEASE_NAMESPACE, &["--set-json", shared_tenant]);
    assert!(!out.status.success(), "two connections shared a tenant");
    assert!(stderr(&out).contains("used twice"), "{}", stderr(&out));
}

#[test]
fn the_chart_ships_the_generated_crds() {
    let in_chart = std::fs::read(CHART_CRDS).expect("the chart has crds/scim-operator.yaml");
    let Ok(generated) = std::fs::read(REPO_CRDS) else {
        panic!(
            "{REPO_CRDS} is missing; generate it with \
             `cargo run -q -- crds > crds/scim-operator.yaml`"
        );
    };
    assert!(
        in_chart == generated,
        "the chart's CRDs differ from crds/scim-operator.yaml; copy it to {CHART_CRDS}"
    );
}

/// Applies the chart's CRDs and waits until the API server serves them.
fn install_chart_crds(kubeconfig: &str) {
    let apply = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        CHART_CRDS,
    ];
    kubectl_ok(kubeconfig, &apply, None);
    let wait = [
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/scimusers.scim-operator.dev",
        "crd/scimgroups.scim-operator.dev",
        "crd/accesspolicies.scim-operator.dev",
    ];
    kubectl_ok(kubeconfig, &wait, None);
}

/// The (apiVersion, kind) pairs the API server serves.
fn served_kinds(kubeconfig: &str) -> BTreeSet<(String, String)> {
    let table = kubectl_ok(kubeconfig, &["api-resources", "--no-headers"], None);
    table
        .lines()
        .filter_map(|line| {
            // NAME [SHORTNAMES] APIVERSION NAMESPACED KIND: count from the end.
            let columns: Vec<&str> = line.split_whitespace().collect();
            let [.., api_version, _, kind] = columns.as_slice() else {
                return None;
            };
            Some((api_version.to_string(), kind.to_string()))
        })
        .collect()
}

#[test]
fn a_real_api_server_accepts_the_rendered_manifests() {
    let Some(helm) = helm() else {
        return;
    };
    let Some(kubeconfig) = kubeconfig("chart server dry-run") else {
        return;
    };
    install_chart_crds(&kubeconfig);
    let namespace = TestNamespace::create(&kubeconfig, "chart");
    let served = served_kinds(&kubeconfig);
    for extra in [vec![], vec!["-f", FULL_VALUES]] {
        let out = template(&helm, &namespace.name, &extra);
        assert!(
            out.status.success(),
            "helm template failed:\n{}",
            stderr(&out)
        );
        let objects = parse_documents(&String::from_utf8_lossy(&out.stdout));

        // The test control plane has no Prometheus Operator, so it does not know the
        // ServiceMonitor kind: objects of kinds the server does not serve are left out, and
        // everything else must pass the server's validation and admission.
        let (known, unknown): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| {
            let api_version = o["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = o["kind"].as_str().unwrap_or_default().to_string();
            served.contains(&(api_version, kind))
        });
        for object in &unknown {
            eprintln!(
                "not sent to the server (kind not served): {}",
                object["kind"]
            );
        }
        assert!(
            unknown.iter().all(|o| o["kind"] == "ServiceMonitor"),
            "unexpected kinds"
        );
        let manifest: String = known
            .iter()
            .map(|o| {
                format!(
                    "---\n{}",
                    serde_norway::to_string(o).expect("objects serialize")
                )
            })
            .collect();
        let apply = ["apply", "--dry-run=server", "-f", "-"];
        let out = kubectl(&kubeconfig, &apply, Some(&manifest));
        assert!(
            out.status.success(),
            "the server rejected the chart ({extra:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A release installed on the test API server, uninstalled on drop together with the tenant
/// namespace that the chart keeps on uninstall.
struct Release {
    helm: PathBuf,
    kubeconfig: String,
    name: String,
    namespace: String,
    tenant: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let uninstall = ["uninstall", &self.name, "--namespace", &self.namespace];
        let _ = run(&self.helm, &uninstall, Some(&self.kubeconfig));
        let delete = [
            "delete",
            "namespace",
            &self.tenant,
            "--wait=false",
            "--ignore-not-found",
        ];
        let _ = kubectl(&self.kubeconfig, &delete, None);
    }
}

impl Release {
    fn helm(&self, verb: &str) -> String {
        let tenant = format!("connections[0].tenant={}", self.tenant);
        let mut args = vec![verb, &self.name, CHART, "--namespace", &self.namespace];
        args.extend(["--set", "connections[0].name=default", "--set", &tenant]);
        args.extend(["--set", "connections[0].createNamespace=true"]);
        run_ok(&self.helm, &args, Some(&self.kubeconfig))
    }

    /// A key of a Secret in the release namespace, or `None` when the Secret is gone.
    fn secret(&self, suffix: &str, key: &str) -> Option<String> {
        let name = format!("{}-scim-operator-{suffix}", self.name);
        let args = ["get", "secret", &name, "-n", &self.namespace, "-o", "json"];
        let out = kubectl(&self.kubeconfig, &args, None);
        if !out.status.success() {
            assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
            return None;
        }
        let secret: Value = serde_json::from_slice(&out.stdout).expect("kubectl prints JSON");
        Some(secret_data(&secret, key))
    }

    fn delete_secret(&self, suffix: &str) {
        let name = format!("{}-scim-operator-{suffix}", self.name);
        kubectl_ok(
            &self.kubeconfig,
            &["delete", "secret", &name, "-n", &self.namespace],
            None,
        );
    }
}

#[test]
fn upgrades_keep_the_initial_token_and_never_bring_a_revoked_one_back() {
    let Some(helm) = helm() else {
        return;
    };
    let Some(kubeconfig) = kubeconfig("chart install and upgrade") else {
        return;
    };
    install_chart_crds(&kubeconfig);
    let namespace = TestNamespace::create(&kubeconfig, "chart");
    let release = Release {
        helm,
        kubeconfig: kubeconfig.clone(),
        name: format!("r{}", &uuid_like()[..10]),
        namespace: namespace.name.clone(),
        tenant: format!("{}-tenant", namespace.name),
    };

    // Install: a token exists, its hash matches, and the notes say how to use it.
    let notes = release.helm("install");
    let token = release
        .secret("initial-token", "token")
        .expect("install writes the token");
    let hash = release
        .secret("initial-token-sha256", "sha256")
        .expect("and its hash");
    assert_eq!(hash, sha256_hex(&token));
    assert!(notes.contains("base64 -d"), "{notes}");
    assert!(notes.contains(&format!(
        "kubectl get scimusers,scimgroups --namespace {}",
        release.tenant
    )));
    assert!(notes.contains("kubectl port-forward"), "{notes}");

    // Upgrade: the same token.
    release.helm("upgrade");
    assert_eq!(
        release.secret("initial-token", "token").as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        release.secret("initial-token-sha256", "sha256").as_deref(),
        Some(hash.as_str())
    );

    // The admin read the token and deleted the plaintext: upgrades keep the hash only.
    release.delete_secret("initial-token");
    let notes = release.helm("upgrade");
    assert_eq!(release.secret("initial-token", "token"), None);
    assert_eq!(
        release.secret("initial-token-sha256", "sha256").as_deref(),
        Some(hash.as_str())
    );
    assert!(
        notes.contains("scim-operator token create --connection default"),
        "{notes}"
    );

    // Revoked: an upgrade does not generate a new token.
    release.delete_secret("initial-token-sha256");
    release.helm("upgrade");
    assert_eq!(release.secret("initial-token", "token"), None);
    assert_eq!(release.secret("initial-token-sha256", "sha256"), None);
}
