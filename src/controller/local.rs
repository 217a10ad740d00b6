//! The controller of the no-cluster mode: reads AccessPolicies from `<data>/policies/*.yaml`
//! and identities from a [`Directory`], and keeps `<data>/output/` equal to the bindings and
//! statuses they imply.
//!
//! Layout of the output, one object per file:
//! - `output/clusterrolebinding/_cluster/<name>.yaml`
//! - `output/rolebinding/<namespace>/<name>.yaml`
//! - `output/accesspolicies/<policy>.status.yaml`
//!
//! A file is rewritten only when its content changes, and replaced atomically. While any
//! policy file cannot be read, nothing is removed: an unreadable file is not a reason to
//! revoke access. The binding files a pass finds are the bindings that exist, so the
//! revocation guard holds here as it does in a cluster. No namespaces exist in this mode:
//! a `namespaceSelector` matches none, and only listed namespaces get bindings.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::audit::{build_access_changes, log_access_changes};
use super::desired::{build_policy_label_value, is_dns1123_subdomain};
use super::{
    ControllerSettings, CurrentAccess, Directory, POLICY_LABEL, Snapshot, build_policy_access,
    build_policy_status, error_chain,
};
use crate::resources::{AccessPolicy, AccessPolicyStatus, kind_of};

/// Longest wait between passes when the directory reports no change; policy files are
/// polled at this pace.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

const POLICIES_DIR: &str = "policies";
const OUTPUT_DIR: &str = "output";
const CLUSTER_ROLE_BINDINGS_DIR: &str = "clusterrolebinding";
const ROLE_BINDINGS_DIR: &str = "rolebinding";
const STATUS_DIR: &str = "accesspolicies";
/// Stands in for the namespace of cluster-scoped objects.
const CLUSTER_SCOPE_DIR: &str = "_cluster";
const YAML_EXTENSION: &str = "yaml";
const STATUS_SUFFIX: &str = ".status.yaml";

/// Failures of the local controller.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file or folder could not be read.
    #[error("failed to read {path}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A file or folder could not be written or removed.
    #[error("failed to write {path}")]
    Write {
        /// What was written.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A policy file is not valid YAML of AccessPolicies.
    #[error("failed to parse {path}")]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: serde_norway::Error,
    },
    /// A policy has no name, a name Kubernetes would refuse, or the name of another policy.
    #[error("failed to load {path}: policy name {name:?} is {problem}")]
    PolicyName {
        /// The policy file.
        path: PathBuf,
        /// The name found.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An object could not be rendered as YAML.
    #[error("failed to render {path}")]
    Render {
        /// Where it was going.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: serde_norway::Error,
    },
    /// A pass stopped abnormally.
    #[error("failed to run a local reconcile pass")]
    Pass(#[source] tokio::task::JoinError),
}

impl LocalError {
    /// A stable category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            LocalError::Read { .. } => "read",
            LocalError::Write { .. } => "write",
            LocalError::Parse { .. } | LocalError::PolicyName { .. } => "invalid_policy",
            LocalError::Render { .. } => "render",
            LocalError::Pass(_) => "pass",
        }
    }
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct LocalReport {
    /// Policies loaded.
    pub policies: usize,
    /// Files created or changed.
    pub written: Vec<PathBuf>,
    /// Files removed because nothing desires them any longer.
    pub removed: Vec<PathBuf>,
    /// Policy files that could not be loaded; while there are any, nothing is removed.
    pub unreadable: Vec<LocalError>,
}

/// Runs passes over `data` until `shutdown` resolves: at once, after every tick of
/// `changes`, and at least every [`POLL_INTERVAL`].
///
/// A failed pass is logged and retried on the next tick; only a pass that panics ends the
/// loop with an error.
pub async fn run_local(
    data: PathBuf,
    directory: Arc<dyn Directory>,
    mut changes: watch::Receiver<u64>,
    settings: ControllerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LocalError> {
    let data = Arc::new(data);
    let settings = Arc::new(settings);
    let mut shutdown = pin!(shutdown);
    let mut changes_open = true;
    loop {
        // Reconcile: a blocking pass over files, off the async workers.
        let (data, directory, settings) = (data.clone(), directory.clone(), settings.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let now = Time(Timestamp::now());
            reconcile_local(&data, directory.as_ref(), &settings, &now)
        });
        match pass.await.map_err(LocalError::Pass)? {
            Ok(report) => {
                for error in &report.unreadable {
                    warn!(error = %error_chain(error), "policy file skipped; nothing is removed");
                }
                debug!(
                    policies = report.policies,
                    written = report.written.len(),
                    removed = report.removed.len(),
                    "local pass done"
                );
            }
            Err(error) => warn!(error = %error_chain(&error), "local pass failed"),
        }

        // Wait: for a directory write, the poll interval or shutdown.
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            changed = changes.changed(), if changes_open => changes_open = changed.is_ok(),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// One pass: loads the policies under `data`, builds what they imply and brings
/// `data/output` in line with it.
pub fn reconcile_local(
    data: &Path,
    directory: &dyn Directory,
    settings: &ControllerSettings,
    now: &Time,
) -> Result<LocalReport, LocalError> {
    let output = data.join(OUTPUT_DIR);

    // Fetch: the policies from their files, and the bindings the output holds.
    let (policies, unreadable) = fetch_policies(&data.join(POLICIES_DIR));
    let existing = fetch_bindings(&output)?;

    // Build: every file the policies and the directory imply.
    let mut files = BTreeMap::new();
    let mut explanations = BTreeMap::new();
    for policy in &policies {
        let tenant = &policy.spec.tenant;
        let path = build_status_path(&output, &policy.name_any());
        let previous = read_yaml::<AccessPolicyStatus>(&path);
        let mut policy = policy.clone();
        policy.status = previous.clone();
        let label = build_policy_label_value(&policy.name_any());
        let current = existing
            .get(&label)
            .map(OwnBindings::current)
            .unwrap_or_default();
        let (users, groups) = (directory.users(tenant), directory.groups(tenant));
        let snapshot = Snapshot::new(&users, &groups);
        let desired = build_policy_access(&policy, &snapshot, &current, settings);
        for binding in &desired.cluster_role_bindings {
            let path = build_binding_path(
                &output,
                CLUSTER_ROLE_BINDINGS_DIR,
                None,
                &binding.name_any(),
            );
            let content = render(binding, &path)?;
            files.insert(path, content);
        }
        for binding in &desired.role_bindings {
            let path = build_binding_path(
                &output,
                ROLE_BINDINGS_DIR,
                binding.namespace().as_deref(),
                &binding.name_any(),
            );
            let content = render(binding, &path)?;
            files.insert(path, content);
        }
        let generation = policy.metadata.generation;
        let status = build_policy_status(&desired, None, generation, previous.as_ref(), now);
        let content = render(&status, &path)?;
        files.insert(path, content);
        explanations.insert(label, desired.explanations);
    }

    // Apply: write the files whose content changed.
    let mut report = LocalReport {
        policies: policies.len(),
        unreadable,
        ..LocalReport::default()
    };
    for (path, content) in &files {
        let current = std::fs::read_to_string(path).ok();
        if current.as_deref() == Some(content.as_str()) {
            continue;
        }
        write_atomically(path, content)?;
        report.written.push(path.clone());
    }

    // Prune: remove what no policy desires any longer, unless a policy could not be read.
    if report.unreadable.is_empty() {
        for path in fetch_output_files(&output)? {
            if files.contains_key(&path) {
                continue;
            }
            delete_file(&path)?;
            report.removed.push(path);
        }
        delete_empty_dirs(&output.join(ROLE_BINDINGS_DIR))?;
    }

    // Audit: log what the output now grants that it did not, and the reverse.
    if !report.written.is_empty() || !report.removed.is_empty() {
        let after = fetch_bindings(&output)?;
        let labels: BTreeSet<&String> = existing.keys().chain(after.keys()).collect();
        let none = BTreeMap::new();
        for label in labels {
            let subjects = |bindings: &BTreeMap<String, OwnBindings>| {
                bindings
                    .get(label)
                    .map(|b| b.current().targets)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(target, current)| (target, current.subjects))
                    .collect()
            };
            let why = explanations.get(label).unwrap_or(&none);
            let changes = build_access_changes(&subjects(&existing), &subjects(&after), why);
            log_access_changes(label, &changes);
        }
    }
    Ok(report)
}

/// The binding files of one policy, parsed.
#[derive(Default)]
struct OwnBindings {
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: Vec<RoleBinding>,
}

impl OwnBindings {
    fn current(&self) -> CurrentAccess {
        CurrentAccess::from_bindings(&self.cluster_role_bindings, &self.role_bindings)
    }
}

/// The binding files under `output`, by the policy label they carry. A file that does not
/// parse counts as absent: it is rewritten or removed like any other.
fn fetch_bindings(output: &Path) -> Result<BTreeMap<String, OwnBindings>, LocalError> {
    let mut bindings: BTreeMap<String, OwnBindings> = BTreeMap::new();
    let yaml = |name: &str| name.ends_with(&format!(".{YAML_EXTENSION}"));
    let policy_of = |labels: &BTreeMap<String, String>| labels.get(POLICY_LABEL).cloned();
    for scope in list_dirs(&output.join(CLUSTER_ROLE_BINDINGS_DIR))? {
        for path in list_files_or_none(&scope, yaml)? {
            let Some(binding) = read_yaml::<ClusterRoleBinding>(&path) else {
                continue;
            };
            if let Some(policy) = policy_of(binding.labels()) {
                bindings
                    .entry(policy)
                    .or_default()
                    .cluster_role_bindings
                    .push(binding);
            }
        }
    }
    for scope in list_dirs(&output.join(ROLE_BINDINGS_DIR))? {
        for path in list_files_or_none(&scope, yaml)? {
            let Some(binding) = read_yaml::<RoleBinding>(&path) else {
                continue;
            };
            if let Some(policy) = policy_of(binding.labels()) {
                bindings
                    .entry(policy)
                    .or_default()
                    .role_bindings
                    .push(binding);
            }
        }
    }
    Ok(bindings)
}

/// Loads every AccessPolicy of the `*.yaml` files in `dir`, in file name order. Documents
/// of other kinds are skipped; a policy without a valid, unique name makes its file
/// unreadable.
fn fetch_policies(dir: &Path) -> (Vec<AccessPolicy>, Vec<LocalError>) {
    let paths = match list_files(dir, |name| name.ends_with(".yaml")) {
        Ok(paths) => paths,
        Err(error) if is_not_found(&error) => return (Vec::new(), Vec::new()),
        Err(error) => return (Vec::new(), vec![error]),
    };
    let mut policies: Vec<AccessPolicy> = Vec::new();
    let mut unreadable = Vec::new();
    let mut names = BTreeSet::new();
    for path in paths {
        let loaded = std::fs::read_to_string(&path)
            .map_err(|source| LocalError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| parse_policies(&path, &text));
        let loaded = loaded.and_then(|file_policies| {
            for policy in &file_policies {
                check_policy_name(&path, policy, &names)?;
            }
            Ok(file_policies)
        });
        match loaded {
            Ok(file_policies) => {
                names.extend(file_policies.iter().map(ResourceExt::name_any));
                policies.extend(file_policies);
            }
            Err(error) => unreadable.push(error),
        }
    }
    (policies, unreadable)
}

fn parse_policies(path: &Path, text: &str) -> Result<Vec<AccessPolicy>, LocalError> {
    let parse_error = |source| LocalError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let kind = kind_of::<AccessPolicy>();
    let mut policies = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(document).map_err(parse_error)?;
        let is_policy = value.get("kind").and_then(|k| k.as_str()) == Some(kind.as_str());
        if value.is_null() || !is_policy {
            continue;
        }
        policies.push(serde_norway::from_value(value).map_err(parse_error)?);
    }
    Ok(policies)
}

fn check_policy_name(
    path: &Path,
    policy: &AccessPolicy,
    known: &BTreeSet<String>,
) -> Result<(), LocalError> {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let problem = if name.is_empty() {
        "missing"
    } else if !is_dns1123_subdomain(&name) {
        "not a DNS-1123 subdomain"
    } else if known.contains(&name) {
        "already taken by another policy"
    } else {
        return Ok(());
    };
    Err(LocalError::PolicyName {
        path: path.to_path_buf(),
        name,
        problem,
    })
}

fn build_binding_path(
    output: &Path,
    kind_dir: &str,
    namespace: Option<&str>,
    name: &str,
) -> PathBuf {
    output
        .join(kind_dir)
        .join(namespace.unwrap_or(CLUSTER_SCOPE_DIR))
        .join(format!("{name}.{YAML_EXTENSION}"))
}

fn build_status_path(output: &Path, policy: &str) -> PathBuf {
    output
        .join(STATUS_DIR)
        .join(format!("{policy}{STATUS_SUFFIX}"))
}

fn render<T: Serialize>(value: &T, path: &Path) -> Result<String, LocalError> {
    serde_norway::to_string(value).map_err(|source| LocalError::Render {
        path: path.to_path_buf(),
        source,
    })
}

fn read_yaml<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_norway::from_str(&text).ok()
}

/// Every output file this controller owns: bindings and policy statuses.
fn fetch_output_files(output: &Path) -> Result<Vec<PathBuf>, LocalError> {
    let yaml = |name: &str| name.ends_with(&format!(".{YAML_EXTENSION}"));
    let mut files = Vec::new();
    for kind_dir in [CLUSTER_ROLE_BINDINGS_DIR, ROLE_BINDINGS_DIR] {
        for scope in list_dirs(&output.join(kind_dir))? {
            files.extend(list_files_or_none(&scope, yaml)?);
        }
    }
    files.extend(list_files_or_none(&output.join(STATUS_DIR), |n| {
        n.ends_with(STATUS_SUFFIX)
    })?);
    Ok(files)
}

fn list_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, LocalError> {
    let read_error = |source| LocalError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let is_file = entry.file_type().map_err(read_error)?.is_file();
        if is_file && entry.file_name().to_str().is_some_and(&keep) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn list_files_or_none(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, LocalError> {
    match list_files(dir, keep) {
        Err(error) if is_not_found(&error) => Ok(Vec::new()),
        other => other,
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>, LocalError> {
    let read_error = |source| LocalError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(read_error(error)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        if entry.file_type().map_err(read_error)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn is_not_found(error: &LocalError) -> bool {
    matches!(error, LocalError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// Writes through a temporary file and a rename, so that a reader never sees half a file.
fn write_atomically(path: &Path, content: &str) -> Result<(), LocalError> {
    let write_error = |source| LocalError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write_error)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, content).map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)
}

fn delete_file(path: &Path) -> Result<(), LocalError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(LocalError::Write {
            path: path.to_path_buf(),
            source: error,
        }),
        _ => Ok(()),
    }
}

/// Removes the namespace folders that hold no file any more.
fn delete_empty_dirs(kind_dir: &Path) -> Result<(), LocalError> {
    for dir in list_dirs(kind_dir)? {
        let is_empty = std::fs::read_dir(&dir)
            .map_err(|source| LocalError::Read {
                path: dir.clone(),
                source,
            })?
            .next()
            .is_none();
        if is_empty {
            // Another pass may have refilled or removed it meanwhile; either is fine.
            let _ = std::fs::remove_dir(&dir);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::resources::{GroupMember, ScimGroup, ScimGroupSpec, ScimUser, ScimUserSpec};
    use k8s_openapi::api::rbac::v1::{RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Mutex;

    const TENANT: &str = "acme";

    const POLICY_YAML: &str = "\
apiVersion: scim-operator.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: analysts
spec:
  tenant: acme
  groups:
  - displayName: ANALYSTS
  grants:
  - clusterRole: view
    namespaces: [data]
  - clusterRole: view
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-policy
";

    #[derive(Default)]
    struct MemoryDirectory {
        users: Mutex<Vec<ScimUser>>,
        groups: Mutex<Vec<ScimGroup>>,
    }

    impl Directory for MemoryDirectory {
        fn users(&self, tenant: &str) -> Vec<ScimUser> {
            let users = self.users.lock().expect("the lock is never poisoned");
            users
                .iter()
                .filter(|u| u.namespace().as_deref() == Some(tenant))
                .cloned()
                .collect()
        }

        fn groups(&self, tenant: &str) -> Vec<ScimGroup> {
            let groups = self.groups.lock().expect("the lock is never poisoned");
            groups
                .iter()
                .filter(|g| g.namespace().as_deref() == Some(tenant))
                .cloned()
                .collect()
        }
    }

    impl MemoryDirectory {
        fn with_analysts() -> Self {
            let directory = MemoryDirectory::default();
            for (id, name) in [("u1", "alice@example.com"), ("u2", "bob@example.com")] {
                let spec = ScimUserSpec {
                    id: id.into(),
                    user_name: name.into(),
                    active: Some(true),
                    ..Default::default()
                };
                let mut user = ScimUser::new(id, spec);
                user.metadata.namespace = Some(TENANT.into());
                directory.users.lock().unwrap().push(user);
            }
            let members = ["u1", "u2"].map(|v| GroupMember {
                value: v.into(),
                ..Default::default()
            });
            let spec = ScimGroupSpec {
                id: "g1".into(),
                display_name: "Analysts".into(),
                members: members.to_vec(),
                ..Default::default()
            };
            let mut group = ScimGroup::new("analysts", spec);
            group.metadata.namespace = Some(TENANT.into());
            directory.groups.lock().unwrap().push(group);
            directory
        }

        fn deactivate(&self, id: &str) {
            for user in self
                .users
                .lock()
                .unwrap()
                .iter_mut()
                .filter(|u| u.spec.id == id)
            {
                user.spec.active = Some(false);
            }
        }
    }

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/analysts.yaml"), POLICY_YAML).unwrap();
        dir
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn pass(dir: &Path, directory: &MemoryDirectory) -> LocalReport {
        reconcile_local(dir, directory, &ControllerSettings::default(), &now()).unwrap()
    }

    fn user(name: &str) -> Subject {
        Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: name.into(),
            namespace: None,
        }
    }

    fn read_role_binding(dir: &Path) -> RoleBinding {
        let path = dir.join("output/rolebinding/data/scim-analysts-c-view.yaml");
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_pass_writes_every_binding_and_the_policy_status() {
        let dir = data_dir();
        let directory = MemoryDirectory::with_analysts();

        let report = pass(dir.path(), &directory);

        let out = dir.path().join("output");
        assert_eq!(
            report.written,
            vec![
                out.join("accesspolicies/analysts.status.yaml"),
                out.join("clusterrolebinding/_cluster/scim-analysts-view.yaml"),
                out.join("rolebinding/data/scim-analysts-c-view.yaml"),
            ]
        );
        assert_eq!(report.policies, 1);
        assert_eq!(
            read_role_binding(dir.path()),
            RoleBinding {
                metadata: ObjectMeta {
                    name: Some("scim-analysts-c-view".into()),
                    namespace: Some("data".into()),
                    labels: Some(BTreeMap::from([
                        (
                            "app.kubernetes.io/managed-by".into(),
                            "scim-operator".into()
                        ),
                        ("scim-operator.dev/policy".into(), "analysts".into()),
                    ])),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "view".into(),
                },
                subjects: Some(vec![user("alice@example.com"), user("bob@example.com")]),
            }
        );
        let status: AccessPolicyStatus =
            read_yaml(&out.join("accesspolicies/analysts.status.yaml")).unwrap();
        assert_eq!(
            (
                status.group_count,
                status.subject_count,
                status.binding_count
            ),
            (1, 2, 2)
        );
        assert_eq!(status.conditions[0].reason, "Reconciled");
    }

    #[test]
    fn a_pass_without_changes_rewrites_nothing() {
        let dir = data_dir();
        let directory = MemoryDirectory::with_analysts();
        pass(dir.path(), &directory);

        let later = reconcile_local(
            dir.path(),
            &directory,
            &ControllerSettings::default(),
            &Time(Timestamp::from_second(1_800_000_000).unwrap()),
        )
        .unwrap();

        assert_eq!(later.written, Vec::<PathBuf>::new());
        assert_eq!(later.removed, Vec::<PathBuf>::new());
    }

    #[test]
    fn a_deactivated_user_leaves_the_binding_on_the_next_pass() {
        let dir = data_dir();
        let directory = MemoryDirectory::with_analysts();
        pass(dir.path(), &directory);

        directory.deactivate("u2");
        let report = pass(dir.path(), &directory);

        assert_eq!(report.written.len(), 3);
        assert_eq!(
            read_role_binding(dir.path()).subjects,
            Some(vec![user("alice@example.com")])
        );
    }

    #[test]
    fn removing_a_policy_removes_its_files_and_leaves_foreign_files_alone() {
        let dir = data_dir();
        let directory = MemoryDirectory::with_analysts();
        pass(dir.path(), &directory);
        let foreign = dir.path().join("output/rolebinding/notes.txt");
        std::fs::write(&foreign, "kept").unwrap();

        std::fs::remove_file(dir.path().join("policies/analysts.yaml")).unwrap();
        let report = pass(dir.path(), &directory);

        let out = dir.path().join("output");
        assert_eq!(
            report.removed,
            vec![
                out.join("clusterrolebinding/_cluster/scim-analysts-view.yaml"),
                out.join("rolebinding/data/scim-analysts-c-view.yaml"),
                out.join("accesspolicies/analysts.status.yaml"),
            ]
        );
        assert!(!out.join("rolebinding/data").exists());
        assert!(foreign.exists());
    }

    #[test]
    fn an_unreadable_policy_file_stops_removal_but_not_updates() {
        let dir = data_dir();
        let directory = MemoryDirectory::with_analysts();
        pass(dir.path(), &directory);
        std::fs::write(
            dir.path().join("policies/broken.yaml"),
            "kind: AccessPolicy\nspec: [",
        )
        .unwrap();
        let second = "apiVersion: scim-operator.dev/v1alpha1\nkind: AccessPolicy\n\
                      metadata: {name: analysts}\nspec: {tenant: acme, groups: [], grants: []}\n";
        std::fs::write(dir.path().join("policies/replacement.yaml"), second).unwrap();

        std::fs::remove_file(dir.path().join("policies/analysts.yaml")).unwrap();
        directory.deactivate("u1");
        let report = pass(dir.path(), &directory);

        let categories: Vec<_> = report.unreadable.iter().map(LocalError::category).collect();
        assert_eq!(categories, vec!["invalid_policy"]);
        assert_eq!(report.removed, Vec::<PathBuf>::new());
        assert_eq!(
            report.written,
            vec![
                dir.path()
                    .join("output/accesspolicies/analysts.status.yaml")
            ]
        );
        assert!(
            dir.path()
                .join("output/clusterrolebinding/_cluster/scim-analysts-view.yaml")
                .exists()
        );
    }

    #[test]
    fn a_second_policy_with_a_taken_name_makes_its_file_unreadable() {
        let dir = data_dir();
        let directory = MemoryDirectory::with_analysts();
        std::fs::write(dir.path().join("policies/zz-copy.yaml"), POLICY_YAML).unwrap();

        let report = pass(dir.path(), &directory);

        assert_eq!(report.policies, 1);
        assert!(matches!(
            &report.unreadable[..],
            [LocalError::PolicyName {
                problem: "already taken by another policy",
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn run_local_follows_directory_changes_until_shutdown() {
        let dir = data_dir();
        let directory = Arc::new(MemoryDirectory::with_analysts());
        let (tick, changes) = watch::channel(0u64);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_local(
            dir.path().to_path_buf(),
            directory.clone(),
            changes,
            ControllerSettings::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let subjects_become = |expected: Vec<Subject>| {
            let path = dir.path().to_path_buf();
            async move {
                for _ in 0..100 {
                    let file = path.join("output/rolebinding/data/scim-analysts-c-view.yaml");
                    if file.exists() && read_role_binding(&path).subjects == Some(expected.clone())
                    {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                false
            }
        };
        assert!(subjects_become(vec![user("alice@example.com"), user("bob@example.com")]).await);

        directory.deactivate("u1");
        tick.send_replace(1);

        assert!(subjects_become(vec![user("bob@example.com")]).await);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
