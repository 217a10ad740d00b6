//! Helpers shared by the integration tests: starting the binary, finding the API server,
//! and small HTTP and kubectl wrappers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kubeconfig of the API server for integration tests, or `None` with a message saying
/// the test is skipped.
pub fn kubeconfig(test: &str) -> Option<String> {
    match std::env::var("KUBECONFIG") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!(
                "skipping {test}: KUBECONFIG is not set; start an API server with \
                 `scripts/control-plane start` and export the path it prints"
            );
            None
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0 always works");
    listener
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// A running `scim-operator` process, stopped on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Prints the server's log, for a failing test.
    pub fn dump_log(&self) {
        if let Ok(text) = std::fs::read_to_string(&self.log) {
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- server log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Starts the binary with the given arguments and waits until it answers.
pub fn start_server(args: &[&str], envs: &[(&str, &str)], log_dir: &Path) -> Server {
    let port = free_port();
    let token = envs
        .iter()
        .find(|(k, _)| *k == "SCIM_OPERATOR_TOKEN")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| format!("test-token-{}", uuid_like()));
    let listen = format!("127.0.0.1:{port}");
    let log = log_dir.join(format!("server-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("the log folder is writable");
    let mut command = Command::new(env!("CARGO_BIN_EXE_scim-operator"));
    command
        .args(args)
        .args(["--listen", &listen])
        .env("SCIM_OPERATOR_TOKEN", &token)
        .env("RUST_LOG", "info,scim_operator=debug")
        .stdout(Stdio::null())
        .stderr(log_file);
    for (k, v) in envs {
        command.env(k, v);
    }
    let child = command.spawn().expect("the binary starts");
    let server = Server {
        child,
        base: format!("http://{listen}/scim/v2"),
        token,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        // Any answer means it listens; a server with only connection tokens answers 401.
        if get(&server, "/ServiceProviderConfig").is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    server.dump_log();
    panic!("the server did not answer within 60 seconds");
}

/// A random string, unique across tests that start at the same moment.
pub fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Sends a request with curl and returns the status and the parsed body (Null when empty).
pub fn request(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let mut command = Command::new("curl");
    command.args(["-sS", "-X", method, "-w", "\n%{http_code}", "-H"]);
    command.arg(format!("Authorization: Bearer {}", server.token));
    command.args(["-H", "Content-Type: application/scim+json"]);
    if let Some(body) = body {
        command.args(["--data-binary", &body.to_string()]);
    }
    command.arg(format!("{}{}", server.base, path));
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').ok_or("no status line")?;
    let status: u16 = status
        .trim()
        .parse()
        .map_err(|_| "bad status".to_string())?;
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?
    };
    Ok((status, json))
}

/// GET.
pub fn get(server: &Server, path: &str) -> Result<(u16, serde_json::Value), String> {
    request(server, "GET", path, None)
}

/// Runs kubectl against a kubeconfig.
pub fn kubectl(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())
            .expect("kubectl reads stdin");
    }
    child.wait_with_output().expect("kubectl runs")
}

/// Runs kubectl and panics with its stderr if it fails.
pub fn kubectl_ok(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(kubeconfig, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the CRDs from `crds/` and waits until they are served.
pub fn install_crds(kubeconfig: &str) {
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/scim-operator.yaml");
    kubectl_ok(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", crds],
        None,
    );
    kubectl_ok(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/scimusers.scim-operator.dev",
            "crd/scimgroups.scim-operator.dev",
            "crd/scimgroupmembers.scim-operator.dev",
            "crd/accesspolicies.scim-operator.dev",
        ],
        None,
    );
}

/// A namespace that is deleted on drop.
pub struct TestNamespace {
    pub name: String,
    pub kubeconfig: String,
}

impl TestNamespace {
    /// Creates a namespace with a unique name.
    pub fn create(kubeconfig: &str, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", &uuid_like()[..10]);
        kubectl_ok(kubeconfig, &["create", "namespace", &name], None);
        Self {
            name,
            kubeconfig: kubeconfig.to_string(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.kubeconfig,
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the recorded IdP flows against a server and returns (success, output).
pub fn replay(server: &Server) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/tests/scim-replay"))
        .args(["--base", &server.base, "--token", &server.token])
        .arg(format!("{root}/tests/idp-cases"))
        .output()
        .expect("python3 is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The subject names of the RoleBinding a policy owns in a namespace; `None` while there is
/// no such binding.
pub fn policy_binding_subjects(
    kubeconfig: &str,
    namespace: &str,
    policy: &str,
) -> Option<Vec<String>> {
    let selector = format!("scim-operator.dev/policy={policy}");
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            "rolebindings",
            "-n",
            namespace,
            "-l",
            &selector,
            "-o",
            "json",
        ],
        None,
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let binding = list["items"].as_array()?.first()?.clone();
    Some(
        binding["subjects"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The decoded value of one key of a Secret.
pub fn secret_value(kubeconfig: &str, namespace: &str, name: &str, key: &str) -> Option<String> {
    let out = kubectl(
        kubeconfig,
        &["get", "secret", name, "-n", namespace, "-o", "json"],
        None,
    );
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_slice(&out.stdout).ok()?;
    let bytes = secret.data?.remove(key)?.0;
    String::from_utf8(bytes).ok()
}
