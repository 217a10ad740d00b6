//! `render` and `diff` run as a reviewer runs them: the binary on the sample manifests in
//! `examples/gitops`, with nothing but folders as input.

use std::process::{Command, Output};

const BEFORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops/before");
const AFTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops/after");
const TRINO_TARGET: &str = "name=trino,format=trino,kind=ConfigMap,namespace=trino,\
                            object=trino-access-control,tenant=idp-acme";
const JSON_TARGET: &str =
    "name=catalog,format=json,kind=Secret,namespace=data-platform,object=platform-access";

/// Runs the binary with `args`, isolated from settings in the caller's environment.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scim-operator"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SCIM_OPERATOR_") || key == "KUBECONFIG" {
            command.env_remove(key);
        }
    }
    command.args(args).output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("the output is UTF-8")
}

#[test]
fn render_prints_the_same_bytes_on_every_run() {
    let args = [
        "render",
        "--from",
        BEFORE,
        "--platform-target",
        TRINO_TARGET,
        "--platform-target",
        JSON_TARGET,
    ];

    let first = run(&args);
    let second = run(&args);

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(first.stdout, second.stdout);
    let kinds: Vec<String> = stdout(&first)
        .lines()
        .filter(|line| line.starts_with("kind: "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        kinds,
        vec![
            "kind: RoleBinding",
            "kind: RoleBinding",
            "kind: Secret",
            "kind: ConfigMap",
        ],
        "bindings first, then the platform objects in target order"
    );
    assert_eq!(String::from_utf8_lossy(&first.stderr), "");
}

#[test]
fn diff_lists_exactly_the_people_whose_access_changes_and_exits_1() {
    let output = run(&[
        "diff",
        "--before",
        BEFORE,
        "--after",
        AFTER,
        "--platform-target",
        TRINO_TARGET,
    ]);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "\
- bob@example.com  ClusterRole/view in namespace analytics (policy analysts-view)
- bob@example.com  SELECT on analytics.*.* in platform trino (policy analysts-view)
+ carol@example.com  ClusterRole/admin in namespace ops (policy engineers-oncall)
+ carol@example.com  OWNERSHIP on analytics.staging.* in platform trino (policy engineers-oncall)
+ dave@example.com  ClusterRole/view in namespace analytics (policy analysts-view)
+ dave@example.com  SELECT on analytics.*.* in platform trino (policy analysts-view)
"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "4 access gained, 2 lost, 3 affected\n"
    );
}

#[test]
fn an_overlay_of_the_after_policies_shows_only_the_policy_change() {
    let output = run(&[
        "diff",
        "--before",
        BEFORE,
        "--after-overlay",
        AFTER,
        "--platform-target",
        TRINO_TARGET,
    ]);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "\
+ carol@example.com  ClusterRole/admin in namespace ops (policy engineers-oncall)
+ carol@example.com  OWNERSHIP on analytics.staging.* in platform trino (policy engineers-oncall)
"
    );
}

#[test]
fn diff_of_identical_states_prints_nothing_and_exits_0() {
    let output = run(&["diff", "--before", BEFORE, "--after", BEFORE]);

    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "");
}

#[test]
fn diff_exits_2_on_an_unreadable_side_or_a_malformed_target() {
    let missing = run(&["diff", "--before", BEFORE, "--after", "/nonexistent/folder"]);
    let malformed = run(&[
        "diff",
        "--before",
        BEFORE,
        "--after",
        AFTER,
        "--platform-target",
        "name=x,format=xml",
    ]);

    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .starts_with("error: failed to read /nonexistent/folder"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert_eq!(malformed.status.code(), Some(2));
    assert_eq!(stdout(&malformed), "");
}
