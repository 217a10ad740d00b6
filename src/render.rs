//! Review before apply: every object the operator would apply for a set of objects
//! (`render`), and who gains or loses which access between two sets (`diff`).
//!
//! The logic is pure functions over a [`Snapshot`] of policies, users and groups; reading
//! a snapshot from a folder of manifests or from a cluster happens at the edges
//! ([`load_manifests`], [`fetch_cluster`]).
//!
//! `diff` compares access person by person: a line says that someone gains (`+`) or loses
//! (`-`) one role binding or one platform privilege, and which policies grant it. Access
//! held on both sides is not shown, even when the policies granting it change.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use k8s_openapi::api::rbac::v1::{RoleRef, Subject};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::controller::desired::{GROUP_SUBJECT, USER_SUBJECT};
use crate::controller::{ControllerSettings, DesiredAccess, build_desired};
use crate::platform::format::privilege_name;
use crate::platform::{
    PlatformError, PlatformOutput, PlatformTarget, build_platform_access, build_platform_outputs,
};
use crate::resources::{API_GROUP, AccessPolicy, ScimGroup, ScimGroupMembers, ScimUser, kind_of};
use crate::store::shards::merge_groups;

/// Objects listed per request when reading from a cluster.
const PAGE_SIZE: u32 = 500;
/// The value of `--before` or `--after` that names the live cluster.
const CLUSTER_SOURCE: &str = "cluster";

/// The inputs of the operator: policies, users and groups.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// AccessPolicies, sorted by name.
    pub policies: Vec<AccessPolicy>,
    /// ScimUsers, sorted by namespace and name.
    pub users: Vec<ScimUser>,
    /// ScimGroups, sorted by namespace and name.
    pub groups: Vec<ScimGroup>,
}

/// Where a snapshot comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The cluster in KUBECONFIG, or the one the process runs in.
    Cluster,
    /// A folder of manifests.
    Folder(PathBuf),
}

impl FromStr for Source {
    type Err = Infallible;

    /// `cluster` names the cluster; anything else is a folder (write `./cluster` for a
    /// folder of that name).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(if text == CLUSTER_SOURCE {
            Source::Cluster
        } else {
            Source::Folder(PathBuf::from(text))
        })
    }
}

/// Failures of loading, rendering or comparing.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file or folder could not be read.
    #[error("failed to read {path}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML, or an object in it does not match its kind.
    #[error("failed to parse {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: serde_norway::Error,
    },
    /// An object cannot be placed: no name, no namespace, or defined twice.
    #[error("failed to load {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No cluster configuration was found.
    #[error("failed to load a kubeconfig (KUBECONFIG) or the in-cluster configuration")]
    Client(#[source] kube::Error),
    /// The cluster refused a listing.
    #[error("failed to list {kind} from the cluster")]
    List {
        /// The resource.
        kind: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// Neither `--after` nor `--after-overlay` was given.
    #[error("failed to compare: give --after or --after-overlay")]
    NoAfter,
    /// An object could not be written as YAML.
    #[error("failed to render YAML")]
    Yaml(#[source] serde_norway::Error),
    /// The platform configuration could not be rendered.
    #[error("failed to render the platform configuration")]
    Platform(#[source] PlatformError),
}

/// Everything the operator would apply for a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// What each policy implies, by policy name.
    pub policies: BTreeMap<String, DesiredAccess>,
    /// The platform objects, in target order.
    pub platform: Vec<PlatformOutput>,
}

impl Rendered {
    /// What was refused or left out, one sentence each, sorted.
    pub fn warnings(&self) -> Vec<String> {
        let policies = self.policies.iter().flat_map(|(name, desired)| {
            let refused = desired.outcome.is_blocked();
            desired.outcome.problems.iter().map(move |problem| {
                let effect = if refused { " (it grants nothing)" } else { "" };
                format!("policy {name}{effect}: {problem}")
            })
        });
        let platform = self.platform.iter().flat_map(|output| {
            let target = &output.target.name;
            output
                .warnings
                .iter()
                .map(move |w| format!("platform target {target}: {w}"))
        });
        let all: BTreeSet<String> = policies.chain(platform).collect();
        all.into_iter().collect()
    }
}

/// One person's (or group's) access, and the policies granting it.
pub type AccessMap = BTreeMap<AccessKey, BTreeSet<String>>;

/// Who holds what.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccessKey {
    /// A userName, or `group:<displayName>` for a binding to a group as a whole.
    pub who: String,
    /// The access, for example `ClusterRole/view in namespace analytics`.
    pub access: String,
}

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccessChange {
    /// Who.
    pub who: String,
    /// What.
    pub access: String,
    /// Whether the access is gained (`true`) or lost.
    pub gained: bool,
    /// The policies that grant it after (gained) or granted it before (lost), sorted.
    pub policies: Vec<String>,
}

/// Reads every ScimUser, ScimGroup and AccessPolicy from the `*.yaml` and `*.yml` files
/// under `dir`, at any depth and in any multi-document or `kind: List` layout. Objects of
/// other kinds are skipped.
///
/// ScimUsers and ScimGroups must carry a namespace (their tenant), and no object may be
/// defined twice.
pub fn load_manifests(dir: &Path) -> Result<Snapshot, RenderError> {
    let mut loaded = Loaded::default();
    for path in list_manifest_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
            path: path.clone(),
            source,
        })?;
        loaded.add_file(&path, &text)?;
    }
    Ok(loaded.into_snapshot())
}

/// Lists every AccessPolicy, ScimUser and ScimGroup of the cluster `client` talks to.
pub async fn fetch_cluster(client: &Client) -> Result<Snapshot, RenderError> {
    let groups: Vec<ScimGroup> = fetch_all(client).await?;
    let shards: Vec<ScimGroupMembers> = fetch_all(client).await?;
    let mut snapshot = Snapshot {
        policies: fetch_all(client).await?,
        users: fetch_all(client).await?,
        groups: merge_groups(&groups, &shards),
    };
    sort_snapshot(&mut snapshot);
    Ok(snapshot)
}

/// Reads the snapshot `source` names.
pub async fn fetch_source(source: &Source) -> Result<Snapshot, RenderError> {
    match source {
        Source::Cluster => {
            let client = Client::try_default().await.map_err(RenderError::Client)?;
            fetch_cluster(&client).await
        }
        Source::Folder(dir) => load_manifests(dir),
    }
}

/// Reads both sides of a diff: `before`, and `after` or `before` with the policies under
/// `overlay` replacing or adding policies by name.
pub async fn fetch_diff_sides(
    before: &Source,
    after: Option<&Source>,
    overlay: Option<&Path>,
) -> Result<(Snapshot, Snapshot), RenderError> {
    let first = fetch_source(before).await?;
    let second = match (after, overlay) {
        (_, Some(dir)) => build_overlay(&first, &load_manifests(dir)?),
        (Some(after), None) if after == before && *after == Source::Cluster => first.clone(),
        (Some(after), None) => fetch_source(after).await?,
        (None, None) => return Err(RenderError::NoAfter),
    };
    Ok((first, second))
}

/// `base` with the AccessPolicies of `overlay` replacing those of the same name and adding
/// the others; the overlay's users and groups are ignored.
pub fn build_overlay(base: &Snapshot, overlay: &Snapshot) -> Snapshot {
    let mut policies: BTreeMap<String, AccessPolicy> = base
        .policies
        .iter()
        .map(|p| (p.name_any(), p.clone()))
        .collect();
    for policy in &overlay.policies {
        policies.insert(policy.name_any(), policy.clone());
    }
    Snapshot {
        policies: policies.into_values().collect(),
        users: base.users.clone(),
        groups: base.groups.clone(),
    }
}

/// Builds everything the operator would apply for `snapshot`.
pub fn build_rendered(
    snapshot: &Snapshot,
    settings: &ControllerSettings,
    targets: &[PlatformTarget],
) -> Result<Rendered, PlatformError> {
    let policies = snapshot
        .policies
        .iter()
        .map(|policy| {
            let desired = build_desired(policy, &snapshot.users, &snapshot.groups, settings);
            (policy.name_any(), desired)
        })
        .collect();
    let platform = build_platform_outputs(
        targets,
        &snapshot.policies,
        &snapshot.users,
        &snapshot.groups,
        settings,
    )?;
    Ok(Rendered { policies, platform })
}

/// The objects of `rendered` as one YAML stream: ClusterRoleBindings by name, RoleBindings
/// by namespace and name, then the platform objects by target name.
pub fn build_render_yaml(rendered: &Rendered) -> Result<String, RenderError> {
    let all = rendered.policies.values();
    let mut cluster: Vec<_> = all.clone().flat_map(|d| &d.cluster_role_bindings).collect();
    cluster.sort_by_key(|b| b.name_any());
    let mut namespaced: Vec<_> = all.flat_map(|d| &d.role_bindings).collect();
    namespaced.sort_by_key(|b| (b.namespace(), b.name_any()));
    let mut text = String::new();
    let mut push = |yaml: Result<String, serde_norway::Error>| -> Result<(), RenderError> {
        text.push_str("---\n");
        text.push_str(&yaml.map_err(RenderError::Yaml)?);
        Ok(())
    };
    for binding in cluster {
        push(serde_norway::to_string(binding))?;
    }
    for binding in namespaced {
        push(serde_norway::to_string(binding))?;
    }
    for output in &rendered.platform {
        push(serde_norway::to_string(&output.object))?;
    }
    Ok(text)
}

/// Who holds what in `rendered`: each subject of each binding, and each user of each
/// platform grant, with the policies granting it. Subject names lose the prefixes of
/// `settings`, so that people appear by userName.
pub fn build_access(rendered: &Rendered, settings: &ControllerSettings) -> AccessMap {
    let mut access = AccessMap::new();
    for (policy, desired) in &rendered.policies {
        let cluster = desired
            .cluster_role_bindings
            .iter()
            .map(|b| (&b.role_ref, None, &b.subjects));
        let namespaced = desired
            .role_bindings
            .iter()
            .map(|b| (&b.role_ref, b.metadata.namespace.as_deref(), &b.subjects));
        for (role_ref, namespace, subjects) in cluster.chain(namespaced) {
            for subject in subjects.iter().flatten() {
                let key = AccessKey {
                    who: build_who(subject, settings),
                    access: build_role_access(role_ref, namespace),
                };
                access.entry(key).or_default().insert(policy.clone());
            }
        }
    }
    for output in &rendered.platform {
        for grant in build_platform_access(&output.document) {
            let key = AccessKey {
                who: grant.user,
                access: format!(
                    "{} on {} in platform {}",
                    privilege_name(grant.privilege),
                    grant.resource,
                    output.target.name
                ),
            };
            access.entry(key).or_default().insert(grant.policy);
        }
    }
    access
}

/// The access gained and lost from `before` to `after`, sorted by who, then access.
pub fn build_access_diff(before: &AccessMap, after: &AccessMap) -> Vec<AccessChange> {
    let change = |key: &AccessKey, policies: &BTreeSet<String>, gained| AccessChange {
        who: key.who.clone(),
        access: key.access.clone(),
        gained,
        policies: policies.iter().cloned().collect(),
    };
    let lost = before
        .iter()
        .filter(|(key, _)| !after.contains_key(*key))
        .map(|(key, policies)| change(key, policies, false));
    let gained = after
        .iter()
        .filter(|(key, _)| !before.contains_key(*key))
        .map(|(key, policies)| change(key, policies, true));
    let mut changes: Vec<AccessChange> = lost.chain(gained).collect();
    changes.sort();
    changes
}

/// One line per change: `+ who  access (policy name)`, `-` for a loss.
pub fn format_access_diff(changes: &[AccessChange]) -> String {
    let mut text = String::new();
    for change in changes {
        let sign = if change.gained { '+' } else { '-' };
        let noun = if change.policies.len() == 1 {
            "policy"
        } else {
            "policies"
        };
        text.push_str(&format!(
            "{sign} {}  {} ({noun} {})\n",
            change.who,
            change.access,
            change.policies.join(", ")
        ));
    }
    text
}

/// A one-line count of `changes`, for people reading a terminal.
pub fn format_access_summary(changes: &[AccessChange]) -> String {
    let gains = changes.iter().filter(|c| c.gained).count();
    let losses = changes.len() - gains;
    let people: BTreeSet<&str> = changes.iter().map(|c| c.who.as_str()).collect();
    format!(
        "{gains} access gained, {losses} lost, {} affected",
        people.len()
    )
}

fn build_who(subject: &Subject, settings: &ControllerSettings) -> String {
    let name = subject.name.as_str();
    match subject.kind.as_str() {
        USER_SUBJECT => name
            .strip_prefix(settings.user_prefix.as_str())
            .unwrap_or(name)
            .to_string(),
        GROUP_SUBJECT => {
            let name = name
                .strip_prefix(settings.group_prefix.as_str())
                .unwrap_or(name);
            format!("group:{name}")
        }
        other => format!("{other}:{name}"),
    }
}

fn build_role_access(role_ref: &RoleRef, namespace: Option<&str>) -> String {
    let role = format!("{}/{}", role_ref.kind, role_ref.name);
    match namespace {
        Some(namespace) => format!("{role} in namespace {namespace}"),
        None => format!("{role} cluster-wide"),
    }
}

/// Objects read so far, by identity, so that a second definition is caught.
#[derive(Default)]
struct Loaded {
    policies: BTreeMap<String, AccessPolicy>,
    users: BTreeMap<(String, String), ScimUser>,
    groups: BTreeMap<(String, String), ScimGroup>,
}

impl Loaded {
    fn add_file(&mut self, path: &Path, text: &str) -> Result<(), RenderError> {
        let parse_error = |source| RenderError::Parse {
            path: path.to_path_buf(),
            source,
        };
        for document in serde_norway::Deserializer::from_str(text) {
            let value = serde_norway::Value::deserialize(document).map_err(parse_error)?;
            let items = match value.get("items") {
                Some(serde_norway::Value::Sequence(items)) if is_list(&value) => items.clone(),
                _ => vec![value],
            };
            for item in items.into_iter().filter(|v| !v.is_null()) {
                self.add_object(path, item)?;
            }
        }
        Ok(())
    }

    fn add_object(&mut self, path: &Path, value: serde_norway::Value) -> Result<(), RenderError> {
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let in_api_group = text("apiVersion").is_some_and(|v| {
            v.split_once('/')
                .is_some_and(|(group, _)| group == API_GROUP)
        });
        let kind = text("kind").unwrap_or_default();
        if !in_api_group {
            return Ok(());
        }
        let invalid = |reason: String| RenderError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if kind == kind_of::<AccessPolicy>() {
            let policy: AccessPolicy = parse_object(path, value)?;
            let name = require_name(&policy, &kind).map_err(invalid)?;
            if self.policies.insert(name.clone(), policy).is_some() {
                return Err(invalid(format!("{kind} {name} is defined twice")));
            }
        } else if kind == kind_of::<ScimUser>() {
            let user: ScimUser = parse_object(path, value)?;
            let key = require_namespaced_name(&user, &kind).map_err(invalid)?;
            if self.users.insert(key.clone(), user).is_some() {
                return Err(invalid(format!(
                    "{kind} {}/{} is defined twice",
                    key.0, key.1
                )));
            }
        } else if kind == kind_of::<ScimGroup>() {
            let group: ScimGroup = parse_object(path, value)?;
            let key = require_namespaced_name(&group, &kind).map_err(invalid)?;
            if self.groups.insert(key.clone(), group).is_some() {
                return Err(invalid(format!(
                    "{kind} {}/{} is defined twice",
                    key.0, key.1
                )));
            }
        }
        Ok(())
    }

    fn into_snapshot(self) -> Snapshot {
        Snapshot {
            policies: self.policies.into_values().collect(),
            users: self.users.into_values().collect(),
            groups: self.groups.into_values().collect(),
        }
    }
}

fn is_list(value: &serde_norway::Value) -> bool {
    value
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k.ends_with("List"))
}

fn parse_object<K: DeserializeOwned>(
    path: &Path,
    value: serde_norway::Value,
) -> Result<K, RenderError> {
    serde_norway::from_value(value).map_err(|source| RenderError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn require_name<K: Resource>(object: &K, kind: &str) -> Result<String, String> {
    match &object.meta().name {
        Some(name) if !name.is_empty() => Ok(name.clone()),
        _ => Err(format!("a {kind} has no metadata.name")),
    }
}

fn require_namespaced_name<K: Resource>(
    object: &K,
    kind: &str,
) -> Result<(String, String), String> {
    let name = require_name(object, kind)?;
    match &object.meta().namespace {
        Some(namespace) if !namespace.is_empty() => Ok((namespace.clone(), name)),
        _ => Err(format!(
            "{kind} {name} has no metadata.namespace, which names its tenant"
        )),
    }
}

/// Every `*.yaml` and `*.yml` file under `dir`, at any depth, sorted by path.
fn list_manifest_files(dir: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Read { path, source }
    };
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(read_error(&current))? {
            let entry = entry.map_err(read_error(&current))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(read_error(&path))?;
            let is_manifest = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if file_type.is_dir() {
                pending.push(path);
            } else if is_manifest {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

async fn fetch_all<K>(client: &Client) -> Result<Vec<K>, RenderError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    let mut objects = Vec::new();
    let mut params = ListParams::default().limit(PAGE_SIZE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|source| RenderError::List {
                kind: K::kind(&()).into_owned(),
                source,
            })?;
        objects.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    for object in &mut objects {
        // Managed fields and the resource version differ between reads of the same state.
        object.meta_mut().managed_fields = None;
    }
    Ok(objects)
}

fn sort_snapshot(snapshot: &mut Snapshot) {
    snapshot.policies.sort_by_key(|p| p.name_any());
    snapshot
        .users
        .sort_by_key(|u| (u.namespace(), u.name_any()));
    snapshot
        .groups
        .sort_by_key(|g| (g.namespace(), g.name_any()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::platform::format::tests::{TENANT, directory, grant, policy};
    use crate::platform::{ObjectKind, PlatformFormat};
    use crate::resources::PlatformPrivilege::{Insert, Select};
    use crate::resources::{AccessPolicySpec, Grant, GroupMember, SubjectKind};

    fn snapshot() -> Snapshot {
        let (users, groups) = directory();
        let mut analysts = policy(
            "analysts",
            &["Analysts"],
            vec![grant(&["analytics.*.*"], &[Select])],
        );
        analysts.spec.grants = vec![Grant {
            cluster_role: Some("view".into()),
            namespaces: vec!["analytics".into()],
            ..Default::default()
        }];
        let mut engineers = policy(
            "engineers",
            &["Engineers"],
            vec![grant(&["analytics.raw.*"], &[Insert])],
        );
        engineers.spec.grants = vec![Grant {
            cluster_role: Some("edit".into()),
            ..Default::default()
        }];
        Snapshot {
            policies: vec![analysts, engineers],
            users,
            groups,
        }
    }

    fn target() -> PlatformTarget {
        PlatformTarget {
            name: "analytics".into(),
            format: PlatformFormat::Json,
            kind: ObjectKind::ConfigMap,
            namespace: "trino".into(),
            object: "platform-access".into(),
            tenant: Some(TENANT.into()),
        }
    }

    fn access(snapshot: &Snapshot) -> AccessMap {
        let settings = ControllerSettings::default();
        let rendered = build_rendered(snapshot, &settings, &[target()]).unwrap();
        build_access(&rendered, &settings)
    }

    #[test]
    fn the_diff_lists_gains_and_losses_person_by_person() {
        let before = snapshot();
        let mut after = before.clone();
        // erin joins the analysts, bob is deactivated, and carol's policy is removed.
        after.groups[0].spec.members.push(GroupMember {
            value: "u-erin".into(),
            ..Default::default()
        });
        after.users[0].spec.active = Some(false);
        after.policies.retain(|p| p.name_any() != "engineers");

        let changes = build_access_diff(&access(&before), &access(&after));

        assert_eq!(
            format_access_diff(&changes),
            "\
- ada@example.com  ClusterRole/edit cluster-wide (policy engineers)
- ada@example.com  INSERT on analytics.raw.* in platform analytics (policy engineers)
- bob@example.com  ClusterRole/view in namespace analytics (policy analysts)
- bob@example.com  SELECT on analytics.*.* in platform analytics (policy analysts)
- carol@example.com  ClusterRole/edit cluster-wide (policy engineers)
- carol@example.com  INSERT on analytics.raw.* in platform analytics (policy engineers)
+ erin@example.com  ClusterRole/view in namespace analytics (policy analysts)
+ erin@example.com  SELECT on analytics.*.* in platform analytics (policy analysts)
"
        );
        assert_eq!(
            format_access_summary(&changes),
            "2 access gained, 6 lost, 4 affected"
        );
    }

    #[test]
    fn access_held_on_both_sides_is_not_a_change_even_through_another_policy() {
        let before = snapshot();
        let mut after = before.clone();
        after.policies[0].metadata.name = Some("analysts-renamed".into());
        let mut both = before.clone();
        both.policies.push(after.policies[0].clone());

        let same = build_access_diff(&access(&before), &access(&before));
        let moved = build_access_diff(&access(&both), &access(&after));

        assert_eq!(same, vec![]);
        assert_eq!(moved, vec![]);
    }

    #[test]
    fn group_subjects_appear_as_groups_and_prefixes_are_stripped() {
        let mut snapshot = snapshot();
        snapshot.policies.truncate(1);
        snapshot.policies[0].spec.subjects = SubjectKind::Both;
        snapshot.policies[0].spec.platform_grants.clear();
        let settings = ControllerSettings {
            user_prefix: "oidc:".into(),
            group_prefix: "oidc:".into(),
            ..ControllerSettings::default()
        };

        let rendered = build_rendered(&snapshot, &settings, &[]).unwrap();
        let who: Vec<String> = build_access(&rendered, &settings)
            .into_keys()
            .map(|k| k.who)
            .collect();

        assert_eq!(
            who,
            vec!["ada@example.com", "bob@example.com", "group:Analysts"]
        );
    }

    #[test]
    fn an_overlay_replaces_and_adds_policies_by_name_and_keeps_the_directory() {
        let base = snapshot();
        let mut changed = base.policies[1].clone();
        changed.spec.platform_grants.clear();
        let added = policy("oncall", &["Engineers"], vec![]);
        let overlay = Snapshot {
            policies: vec![changed.clone(), added.clone()],
            users: vec![],
            groups: vec![],
        };

        let result = build_overlay(&base, &overlay);

        let specs = |s: &Snapshot| -> Vec<(String, AccessPolicySpec)> {
            s.policies
                .iter()
                .map(|p| (p.name_any(), p.spec.clone()))
                .collect()
        };
        assert_eq!(
            specs(&result),
            vec![
                ("analysts".into(), base.policies[0].spec.clone()),
                ("engineers".into(), changed.spec),
                ("oncall".into(), added.spec),
            ]
        );
        let specs_of = |s: &Snapshot| {
            let users: Vec<_> = s.users.iter().map(|u| u.spec.clone()).collect();
            let groups: Vec<_> = s.groups.iter().map(|g| g.spec.clone()).collect();
            (users, groups)
        };
        assert_eq!(specs_of(&result), specs_of(&base));
    }

    #[test]
    fn manifests_load_from_multi_document_files_and_lists_and_skip_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nested")).unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: scim-operator.dev/v1alpha1\nkind: ScimUser\n\
             metadata: {name: ada, namespace: t}\nspec: {id: u1, userName: ada}\n---\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("nested/b.yml"),
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: scim-operator.dev/v1alpha1\n  kind: ScimGroup\n  \
               metadata: {name: g, namespace: t}\n  spec: {id: g1, displayName: G}\n\
             - apiVersion: scim-operator.dev/v1alpha1\n  kind: AccessPolicy\n  \
               metadata: {name: p}\n  spec: {tenant: t, groups: [], grants: []}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();

        let snapshot = load_manifests(dir.path()).unwrap();

        assert_eq!(
            (
                snapshot
                    .users
                    .iter()
                    .map(|u| u.name_any())
                    .collect::<Vec<_>>(),
                snapshot
                    .groups
                    .iter()
                    .map(|g| g.name_any())
                    .collect::<Vec<_>>(),
                snapshot
                    .policies
                    .iter()
                    .map(|p| p.name_any())
                    .collect::<Vec<_>>(),
            ),
            (vec!["ada".into()], vec!["g".into()], vec!["p".into()])
        );
    }

    #[test]
    fn an_identity_without_namespace_or_defined_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let user = "apiVersion: scim-operator.dev/v1alpha1\nkind: ScimUser\n\
                    metadata: {name: ada}\nspec: {id: u1, userName: ada}\n";
        std::fs::write(dir.path().join("a.yaml"), user).unwrap();

        let missing = load_manifests(dir.path()).unwrap_err().to_string();
        let twice = user.replace("{name: ada}", "{name: ada, namespace: t}");
        std::fs::write(dir.path().join("a.yaml"), format!("{twice}---\n{twice}")).unwrap();
        let duplicated = load_manifests(dir.path()).unwrap_err().to_string();

        let path = dir.path().join("a.yaml");
        assert_eq!(
            missing,
            format!(
                "failed to load {}: ScimUser ada has no metadata.namespace, which names its \
                 tenant",
                path.display()
            )
        );
        assert_eq!(
            duplicated,
            format!(
                "failed to load {}: ScimUser t/ada is defined twice",
                path.display()
            )
        );
    }
}
