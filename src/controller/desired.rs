//! The bindings an AccessPolicy implies: a pure function of the policy, the users and groups
//! of its tenant and the [`ControllerSettings`]. No I/O happens here.
//!
//! Guarantees, whatever the directory holds:
//! - only active users who are members of a selected group become subjects;
//! - a subject whose name reaches a reserved identity is never bound;
//! - a policy with a malformed grant or selector, or naming a role outside the allow-list,
//!   grants nothing at all (it fails closed rather than granting a guess);
//! - the result is deterministic: sorted objects, sorted distinct subjects, stable names.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::status::{
    REASON_INVALID_GRANT, REASON_INVALID_SELECTOR, REASON_RESERVED_SUBJECT,
    REASON_ROLE_NOT_ALLOWED, REASON_UNKNOWN_GROUP,
};
use super::{ControllerSettings, POLICY_LABEL};
use crate::resources::{
    AccessPolicy, Grant, GroupSelector, MANAGED_BY, MANAGED_BY_LABEL, ScimGroup, ScimUser,
    SubjectKind,
};

/// API group of RBAC roles, bindings and user and group subjects.
pub const RBAC_API_GROUP: &str = "rbac.authorization.k8s.io";
/// Kind of a cluster-wide role.
pub const CLUSTER_ROLE: &str = "ClusterRole";
/// Kind of a namespaced role.
pub const ROLE: &str = "Role";
/// Subject kind of one person.
pub const USER_SUBJECT: &str = "User";
/// Subject kind of a group.
pub const GROUP_SUBJECT: &str = "Group";

/// Object names are DNS-1123 subdomains, which end at 253 characters.
const MAX_NAME_LEN: usize = 253;
/// Label values end at 63 characters.
const MAX_LABEL_LEN: usize = 63;
/// Hex digits of the hash that keeps shortened or rewritten names distinct.
const HASH_LEN: usize = 8;
/// Names under these prefixes belong to Kubernetes itself (nodes, service accounts,
/// `system:masters`, `system:anonymous`), compared without regard to ASCII case.
const RESERVED_PREFIXES: &[&str] = &["system:"];
/// Break-glass identities that kubeadm issues certificates for.
const RESERVED_NAMES: &[&str] = &["kubernetes-admin", "kubernetes-super-admin"];

/// Everything one policy implies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredAccess {
    /// ClusterRoleBindings, sorted by name.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// RoleBindings, sorted by namespace, then name.
    pub role_bindings: Vec<RoleBinding>,
    /// What the policy resolved to, for its status.
    pub outcome: PolicyOutcome,
}

impl DesiredAccess {
    /// Number of bindings of both kinds.
    pub fn binding_count(&self) -> usize {
        self.cluster_role_bindings.len() + self.role_bindings.len()
    }
}

/// What a policy resolved to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyOutcome {
    /// displayNames of the selected groups that exist, sorted.
    pub groups: Vec<String>,
    /// The subjects that every binding of the policy holds, sorted and distinct; empty when
    /// the policy is blocked.
    pub subjects: Vec<Subject>,
    /// What was refused or not found, in the order of the spec.
    pub problems: Vec<Problem>,
}

impl PolicyOutcome {
    /// Whether a problem stops the whole policy from granting anything.
    pub fn is_blocked(&self) -> bool {
        self.problems.iter().any(Problem::blocks_policy)
    }
}

/// Something in a policy that was refused or could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A selector matches no group of the tenant; the other selectors still grant.
    UnknownGroup {
        /// The selector, as `field "value"`.
        selector: String,
    },
    /// A selector sets no identifier or more than one.
    InvalidSelector {
        /// Position of the selector in `spec.groups`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A grant is malformed.
    InvalidGrant {
        /// Position of the grant in `spec.grants`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A grant names a role outside the allow-list.
    RoleNotAllowed {
        /// `ClusterRole` or `Role`.
        kind: &'static str,
        /// The role's name.
        name: String,
    },
    /// A subject would reach a reserved identity; it is never bound.
    ReservedSubject {
        /// `User` or `Group`.
        kind: &'static str,
        /// The subject name after prefixing.
        name: String,
    },
}

impl Problem {
    /// The condition reason this problem reports under.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::UnknownGroup { .. } => REASON_UNKNOWN_GROUP,
            Problem::InvalidSelector { .. } => REASON_INVALID_SELECTOR,
            Problem::InvalidGrant { .. } => REASON_INVALID_GRANT,
            Problem::RoleNotAllowed { .. } => REASON_ROLE_NOT_ALLOWED,
            Problem::ReservedSubject { .. } => REASON_RESERVED_SUBJECT,
        }
    }

    /// Whether the problem stops the whole policy from granting anything.
    pub fn blocks_policy(&self) -> bool {
        matches!(
            self,
            Problem::InvalidSelector { .. }
                | Problem::InvalidGrant { .. }
                | Problem::RoleNotAllowed { .. }
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownGroup { selector } => write!(f, "no group matches {selector}"),
            Problem::InvalidSelector { index, reason } => write!(f, "groups[{index}] {reason}"),
            Problem::InvalidGrant { index, reason } => write!(f, "grants[{index}] {reason}"),
            Problem::RoleNotAllowed { kind, name } => {
                write!(f, "{kind} {name:?} is not in the allowed roles")
            }
            Problem::ReservedSubject { kind, name } => {
                write!(f, "{kind} {name:?} is a reserved name and is not bound")
            }
        }
    }
}

/// Whether a binding refers to a ClusterRole or a Role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RoleKind {
    Cluster,
    Namespaced,
}

impl RoleKind {
    fn as_str(self) -> &'static str {
        match self {
            RoleKind::Cluster => CLUSTER_ROLE,
            RoleKind::Namespaced => ROLE,
        }
    }
}

/// One binding a valid grant asks for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BindingTarget {
    /// A ClusterRoleBinding.
    ClusterWide { cluster_role: String },
    /// A RoleBinding in one namespace.
    InNamespace {
        namespace: String,
        kind: RoleKind,
        role: String,
    },
}

/// One way to identify a group.
enum GroupKey<'a> {
    DisplayName(&'a str),
    ExternalId(&'a str),
    Id(&'a str),
}

impl GroupKey<'_> {
    fn matches(&self, group: &ScimGroup) -> bool {
        match self {
            GroupKey::DisplayName(name) => eq_ignore_case(&group.spec.display_name, name),
            GroupKey::ExternalId(id) => group.spec.external_id.as_deref() == Some(*id),
            GroupKey::Id(id) => group.spec.id == *id,
        }
    }
}

impl fmt::Display for GroupKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupKey::DisplayName(v) => write!(f, "displayName {v:?}"),
            GroupKey::ExternalId(v) => write!(f, "externalId {v:?}"),
            GroupKey::Id(v) => write!(f, "id {v:?}"),
        }
    }
}

/// Builds the bindings `policy` implies over the users and groups of its tenant.
///
/// `users` and `groups` may hold objects of other tenants; only those in the policy's
/// tenant (or without a namespace, as in the local mode) count.
pub fn build_desired<U, G>(
    policy: &AccessPolicy,
    users: &[U],
    groups: &[G],
    settings: &ControllerSettings,
) -> DesiredAccess
where
    U: Borrow<ScimUser>,
    G: Borrow<ScimGroup>,
{
    let tenant = policy.spec.tenant.as_str();
    let mut problems = Vec::new();

    // Validate: a malformed spec or a role outside the allow-list stops the whole policy.
    let keys = validate_selectors(&policy.spec.groups, &mut problems);
    let targets = validate_grants(&policy.spec.grants, settings, &mut problems);

    // Resolve: the selected groups of the tenant, then the subjects they yield.
    let selected = select_groups(&keys, tenant, groups, &mut problems);
    let subjects = build_subjects(
        policy.spec.subjects,
        &selected,
        tenant,
        users,
        settings,
        &mut problems,
    );
    let mut outcome = PolicyOutcome {
        groups: selected
            .iter()
            .map(|g| g.spec.display_name.clone())
            .collect(),
        subjects,
        problems,
    };
    if outcome.is_blocked() {
        outcome.subjects.clear();
        return DesiredAccess {
            outcome,
            ..DesiredAccess::default()
        };
    }

    // Build: one binding per target, every one holding the same subjects.
    let (cluster_role_bindings, role_bindings) =
        build_bindings(policy, &targets, &outcome.subjects);
    DesiredAccess {
        cluster_role_bindings,
        role_bindings,
        outcome,
    }
}

/// Name of the ClusterRoleBinding through which `policy` grants `cluster_role`.
pub fn build_cluster_role_binding_name(policy: &str, cluster_role: &str) -> String {
    build_name(&format!("scim-{policy}-{cluster_role}"), MAX_NAME_LEN)
}

/// Name of a RoleBinding through which `policy` grants a role; `role_kind` is `ClusterRole`
/// or `Role`.
pub fn build_role_binding_name(policy: &str, role_kind: &str, role: &str) -> String {
    // The marker keeps a binding to ClusterRole `x` apart from one to Role `x`.
    let marker = if role_kind == CLUSTER_ROLE { "c" } else { "r" };
    build_name(&format!("scim-{policy}-{marker}-{role}"), MAX_NAME_LEN)
}

/// Value of [`POLICY_LABEL`] on the bindings of the policy named `policy`.
pub fn build_policy_label_value(policy: &str) -> String {
    build_name(policy, MAX_LABEL_LEN)
}

/// The owner reference that ties a binding to `policy`; `None` for a policy that was never
/// stored in a cluster and so has no uid.
pub fn build_owner_reference(policy: &AccessPolicy) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: AccessPolicy::api_version(&()).into_owned(),
        kind: AccessPolicy::kind(&()).into_owned(),
        name: policy.name_any(),
        uid: policy.meta().uid.clone()?,
        controller: Some(true),
        // Blocking owner deletion needs update rights on the policy's finalizers; GC works
        // without it.
        block_owner_deletion: None,
    })
}

/// Whether `name` would reach an identity that Kubernetes reserves.
pub fn is_reserved_subject(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name.is_empty()
        || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        || RESERVED_NAMES.contains(&name.as_str())
}

fn validate_selectors<'a>(
    selectors: &'a [GroupSelector],
    problems: &mut Vec<Problem>,
) -> Vec<GroupKey<'a>> {
    let mut keys = Vec::new();
    for (index, selector) in selectors.iter().enumerate() {
        let mut found = Vec::new();
        if let Some(v) = &selector.display_name {
            found.push(GroupKey::DisplayName(v));
        }
        if let Some(v) = &selector.external_id {
            found.push(GroupKey::ExternalId(v));
        }
        if let Some(v) = &selector.id {
            found.push(GroupKey::Id(v));
        }
        match found.len() {
            1 => keys.extend(found),
            0 => problems.push(Problem::InvalidSelector {
                index,
                reason: "sets none of displayName, externalId and id".into(),
            }),
            _ => problems.push(Problem::InvalidSelector {
                index,
                reason: "sets more than one of displayName, externalId and id".into(),
            }),
        }
    }
    keys
}

fn validate_grants(
    grants: &[Grant],
    settings: &ControllerSettings,
    problems: &mut Vec<Problem>,
) -> Vec<BindingTarget> {
    let mut targets = Vec::new();
    for (index, grant) in grants.iter().enumerate() {
        let invalid = |reason: String| Problem::InvalidGrant { index, reason };
        let (kind, role) = match (&grant.cluster_role, &grant.role) {
            (Some(name), None) => (RoleKind::Cluster, name),
            (None, Some(name)) => (RoleKind::Namespaced, name),
            (Some(_), Some(_)) => {
                problems.push(invalid("sets both clusterRole and role".into()));
                continue;
            }
            (None, None) => {
                problems.push(invalid("sets neither clusterRole nor role".into()));
                continue;
            }
        };
        if !is_valid_role_name(role) {
            problems.push(invalid(format!(
                "names {:?}, which is not a valid role name",
                role
            )));
            continue;
        }
        if kind == RoleKind::Namespaced && grant.namespaces.is_empty() {
            problems.push(invalid(format!(
                "grants Role {role:?} but lists no namespaces"
            )));
            continue;
        }
        if let Some(ns) = grant.namespaces.iter().find(|ns| !is_dns1123_label(ns)) {
            problems.push(invalid(format!(
                "lists {ns:?}, which is not a valid namespace name"
            )));
            continue;
        }
        if !is_role_allowed(settings, kind, role) {
            let problem = Problem::RoleNotAllowed {
                kind: kind.as_str(),
                name: role.clone(),
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
            continue;
        }
        if grant.namespaces.is_empty() {
            targets.push(BindingTarget::ClusterWide {
                cluster_role: role.clone(),
            });
        }
        for namespace in &grant.namespaces {
            targets.push(BindingTarget::InNamespace {
                namespace: namespace.clone(),
                kind,
                role: role.clone(),
            });
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

fn select_groups<'a, G: Borrow<ScimGroup>>(
    keys: &[GroupKey<'_>],
    tenant: &str,
    groups: &'a [G],
    problems: &mut Vec<Problem>,
) -> Vec<&'a ScimGroup> {
    let mut selected: BTreeMap<(&str, &str), &ScimGroup> = BTreeMap::new();
    for key in keys {
        let mut matched = false;
        let in_tenant = groups
            .iter()
            .map(Borrow::borrow)
            .filter(|g| is_in_tenant(*g, tenant));
        for group in in_tenant.filter(|g| key.matches(g)) {
            matched = true;
            selected.insert((&group.spec.display_name, &group.spec.id), group);
        }
        if !matched {
            problems.push(Problem::UnknownGroup {
                selector: key.to_string(),
            });
        }
    }
    selected.into_values().collect()
}

fn build_subjects<U: Borrow<ScimUser>>(
    kind: SubjectKind,
    groups: &[&ScimGroup],
    tenant: &str,
    users: &[U],
    settings: &ControllerSettings,
    problems: &mut Vec<Problem>,
) -> Vec<Subject> {
    let by_id = index_users(users, tenant);
    let mut subjects = Vec::new();
    for group in groups {
        if matches!(kind, SubjectKind::User | SubjectKind::Both) {
            let members = group
                .spec
                .members
                .iter()
                .filter_map(|m| by_id.get(m.value.as_str()));
            for user in members.filter(|u| u.spec.is_active()) {
                let name = format!("{}{}", settings.user_prefix, user.spec.user_name);
                subjects.push(build_subject(USER_SUBJECT, name));
            }
        }
        if matches!(kind, SubjectKind::Group | SubjectKind::Both) {
            let name = format!("{}{}", settings.group_prefix, group.spec.display_name);
            subjects.push(build_subject(GROUP_SUBJECT, name));
        }
    }
    subjects.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    subjects.dedup();
    subjects.retain(|subject| {
        let reserved = is_reserved_subject(&subject.name);
        if reserved {
            let kind = if subject.kind == USER_SUBJECT {
                USER_SUBJECT
            } else {
                GROUP_SUBJECT
            };
            problems.push(Problem::ReservedSubject {
                kind,
                name: subject.name.clone(),
            });
        }
        !reserved
    });
    subjects
}

/// Users of `tenant` by SCIM id. Two records with one id should not exist; if they do, an
/// inactive one wins, so that a doubt never grants.
fn index_users<'a, U: Borrow<ScimUser>>(
    users: &'a [U],
    tenant: &str,
) -> HashMap<&'a str, &'a ScimUser> {
    let mut by_id: HashMap<&str, &ScimUser> = HashMap::with_capacity(users.len());
    for user in users
        .iter()
        .map(Borrow::borrow)
        .filter(|u| is_in_tenant(*u, tenant))
    {
        by_id
            .entry(user.spec.id.as_str())
            .and_modify(|known| {
                if !user.spec.is_active() {
                    *known = user;
                }
            })
            .or_insert(user);
    }
    by_id
}

fn build_bindings(
    policy: &AccessPolicy,
    targets: &[BindingTarget],
    subjects: &[Subject],
) -> (Vec<ClusterRoleBinding>, Vec<RoleBinding>) {
    let policy_name = policy.name_any();
    let mut cluster = BTreeMap::new();
    let mut namespaced = BTreeMap::new();
    for target in targets {
        match target {
            BindingTarget::ClusterWide { cluster_role } => {
                let name = build_cluster_role_binding_name(&policy_name, cluster_role);
                let binding = ClusterRoleBinding {
                    metadata: build_metadata(policy, &name, None),
                    role_ref: build_role_ref(RoleKind::Cluster, cluster_role),
                    subjects: Some(subjects.to_vec()),
                };
                cluster.insert(name, binding);
            }
            BindingTarget::InNamespace {
                namespace,
                kind,
                role,
            } => {
                let name = build_role_binding_name(&policy_name, kind.as_str(), role);
                let binding = RoleBinding {
                    metadata: build_metadata(policy, &name, Some(namespace)),
                    role_ref: build_role_ref(*kind, role),
                    subjects: Some(subjects.to_vec()),
                };
                namespaced.insert((namespace.clone(), name), binding);
            }
        }
    }
    (
        cluster.into_values().collect(),
        namespaced.into_values().collect(),
    )
}

fn build_metadata(policy: &AccessPolicy, name: &str, namespace: Option<&str>) -> ObjectMeta {
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (
            POLICY_LABEL.to_string(),
            build_policy_label_value(&policy.name_any()),
        ),
    ]);
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        owner_references: build_owner_reference(policy).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

fn build_role_ref(kind: RoleKind, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some(RBAC_API_GROUP.to_string()),
        kind: kind.as_str().to_string(),
        name: name.to_string(),
    }
}

fn build_subject(kind: &str, name: String) -> Subject {
    Subject {
        api_group: Some(RBAC_API_GROUP.to_string()),
        kind: kind.to_string(),
        name,
        namespace: None,
    }
}

fn is_role_allowed(settings: &ControllerSettings, kind: RoleKind, role: &str) -> bool {
    let Some(allowed) = &settings.allowed_roles else {
        return true;
    };
    allowed.iter().any(|entry| match entry.split_once('/') {
        Some((entry_kind, name)) => entry_kind == kind.as_str() && name == role,
        None => entry == role,
    })
}

fn is_in_tenant<K: Resource>(object: &K, tenant: &str) -> bool {
    object
        .meta()
        .namespace
        .as_deref()
        .is_none_or(|ns| ns == tenant)
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// RBAC object names are path segments: anything but empty, `.`, `..`, `/` and `%`.
fn is_valid_role_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

/// Whether `name` is a DNS-1123 subdomain, the form Kubernetes requires of most names.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('.').all(is_dns1123_part)
}

fn is_dns1123_label(name: &str) -> bool {
    name.len() <= MAX_LABEL_LEN && is_dns1123_part(name)
}

/// Letters, digits and `-`, starting and ending with a letter or digit.
fn is_dns1123_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// A DNS-1123 subdomain of at most `max` characters derived from `raw`. A name that had to
/// be rewritten or shortened ends in a hash of `raw`, so that distinct inputs stay distinct.
fn build_name(raw: &str, max: usize) -> String {
    let clean = build_dns1123_subdomain(raw);
    if clean == raw && raw.len() <= max {
        return clean;
    }
    let hash = hex::encode(Sha256::digest(raw.as_bytes()));
    let hash = &hash[..HASH_LEN];
    let head = clean.get(..max - HASH_LEN - 1).unwrap_or(&clean);
    let head = head.trim_end_matches(['-', '.']);
    if head.is_empty() {
        hash.to_string()
    } else {
        format!("{head}-{hash}")
    }
}

/// Lower-cases `raw`, replaces what a DNS-1123 subdomain cannot hold with `-` and trims
/// every dot-separated part to start and end with a letter or digit.
fn build_dns1123_subdomain(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let parts: Vec<&str> = mapped
        .split('.')
        .map(|part| part.trim_matches('-'))
        .filter(|p| !p.is_empty())
        .collect();
    parts.join(".")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::resources::{AccessPolicySpec, GroupMember, ScimGroupSpec, ScimUserSpec};

    const TENANT: &str = "idp-acme";

    fn user(id: &str, user_name: &str, active: bool) -> ScimUser {
        let mut user = ScimUser::new(
            &user_name.to_lowercase().replace('@', "-"),
            ScimUserSpec {
                id: id.into(),
                user_name: user_name.into(),
                active: Some(active),
                ..ScimUserSpec::default()
            },
        );
        user.metadata.namespace = Some(TENANT.into());
        user
    }

    fn group(id: &str, display_name: &str, members: &[&str]) -> ScimGroup {
        let mut group = ScimGroup::new(
            &display_name.to_lowercase(),
            ScimGroupSpec {
                id: id.into(),
                display_name: display_name.into(),
                external_id: Some(format!("ext-{id}")),
                members: members
                    .iter()
                    .map(|m| GroupMember {
                        value: (*m).into(),
                        ..GroupMember::default()
                    })
                    .collect(),
            },
        );
        group.metadata.namespace = Some(TENANT.into());
        group
    }

    fn by_name(name: &str) -> GroupSelector {
        GroupSelector {
            display_name: Some(name.into()),
            ..GroupSelector::default()
        }
    }

    fn cluster_role(name: &str, namespaces: &[&str]) -> Grant {
        Grant {
            cluster_role: Some(name.into()),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            ..Grant::default()
        }
    }

    fn role(name: &str, namespaces: &[&str]) -> Grant {
        Grant {
            role: Some(name.into()),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            ..Grant::default()
        }
    }

    fn policy(groups: Vec<GroupSelector>, grants: Vec<Grant>) -> AccessPolicy {
        let mut policy = AccessPolicy::new(
            "analysts",
            AccessPolicySpec {
                tenant: TENANT.into(),
                groups,
                grants,
                subjects: SubjectKind::User,
            },
        );
        policy.metadata.uid = Some("policy-uid".into());
        policy
    }

    fn user_subject(name: &str) -> Subject {
        build_subject(USER_SUBJECT, name.into())
    }

    fn group_subject(name: &str) -> Subject {
        build_subject(GROUP_SUBJECT, name.into())
    }

    fn expected_metadata(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(str::to_string),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "scim-operator".to_string(),
                ),
                (
                    "scim-operator.dev/policy".to_string(),
                    "analysts".to_string(),
                ),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "scim-operator.dev/v1alpha1".into(),
                kind: "AccessPolicy".into(),
                name: "analysts".into(),
                uid: "policy-uid".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        }
    }

    fn expected_role_binding(
        namespace: &str,
        name: &str,
        role_ref: (&str, &str),
        subjects: Vec<Subject>,
    ) -> RoleBinding {
        RoleBinding {
            metadata: expected_metadata(name, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some(RBAC_API_GROUP.into()),
                kind: role_ref.0.into(),
                name: role_ref.1.into(),
            },
            subjects: Some(subjects),
        }
    }

    fn directory() -> (Vec<ScimUser>, Vec<ScimGroup>) {
        let users = vec![
            user("u-carol", "carol@example.com", true),
            user("u-alice", "alice@example.com", true),
            user("u-bob", "bob@example.com", false),
            user("u-dave", "dave@example.com", true),
        ];
        let groups = vec![
            // u-gone names a user who was deleted.
            group(
                "g-analysts",
                "Analysts",
                &["u-carol", "u-alice", "u-bob", "u-gone"],
            ),
            group("g-admins", "Admins", &["u-dave"]),
        ];
        (users, groups)
    }

    #[test]
    fn active_members_of_a_selected_group_become_sorted_user_subjects_in_each_namespace() {
        let (users, groups) = directory();
        let policy = policy(
            vec![by_name("Analysts")],
            vec![cluster_role("view", &["b", "a"])],
        );

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        let subjects = vec![
            user_subject("alice@example.com"),
            user_subject("carol@example.com"),
        ];
        let expected = DesiredAccess {
            cluster_role_bindings: vec![],
            role_bindings: vec![
                expected_role_binding(
                    "a",
                    "scim-analysts-c-view",
                    ("ClusterRole", "view"),
                    subjects.clone(),
                ),
                expected_role_binding(
                    "b",
                    "scim-analysts-c-view",
                    ("ClusterRole", "view"),
                    subjects.clone(),
                ),
            ],
            outcome: PolicyOutcome {
                groups: vec!["Analysts".into()],
                subjects,
                problems: vec![],
            },
        };
        assert_eq!(desired, expected);
    }

    #[test]
    fn a_cluster_role_without_namespaces_is_bound_cluster_wide_with_prefixed_names() {
        let (users, groups) = directory();
        let policy = policy(vec![by_name("admins")], vec![cluster_role("edit", &[])]);
        let settings = ControllerSettings {
            user_prefix: "oidc:".into(),
            ..Default::default()
        };

        let desired = build_desired(&policy, &users, &groups, &settings);

        let subjects = vec![user_subject("oidc:dave@example.com")];
        let expected = DesiredAccess {
            cluster_role_bindings: vec![ClusterRoleBinding {
                metadata: expected_metadata("scim-analysts-edit", None),
                role_ref: RoleRef {
                    api_group: Some(RBAC_API_GROUP.into()),
                    kind: "ClusterRole".into(),
                    name: "edit".into(),
                },
                subjects: Some(subjects.clone()),
            }],
            role_bindings: vec![],
            outcome: PolicyOutcome {
                groups: vec!["Admins".into()],
                subjects,
                problems: vec![],
            },
        };
        assert_eq!(desired, expected);
    }

    #[test]
    fn a_role_grant_binds_the_role_in_each_namespace() {
        let (users, groups) = directory();
        let policy = policy(vec![by_name("Admins")], vec![role("reader", &["data"])]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(
            desired.role_bindings,
            vec![expected_role_binding(
                "data",
                "scim-analysts-r-reader",
                ("Role", "reader"),
                vec![user_subject("dave@example.com")],
            )]
        );
    }

    #[test]
    fn inactive_and_deleted_users_hold_no_access() {
        let (mut users, groups) = directory();
        users.retain(|u| u.spec.id != "u-carol");
        for user in &mut users {
            user.spec.active = Some(false);
        }
        let policy = policy(vec![by_name("Analysts")], vec![cluster_role("view", &[])]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(desired.outcome.subjects, vec![]);
        assert_eq!(desired.cluster_role_bindings[0].subjects, Some(vec![]));
    }

    #[test]
    fn group_and_both_subject_kinds_bind_the_group_with_its_prefix() {
        let (users, groups) = directory();
        let mut policy = policy(vec![by_name("Admins")], vec![cluster_role("view", &[])]);
        let settings = ControllerSettings {
            user_prefix: "u:".into(),
            group_prefix: "g:".into(),
            allowed_roles: None,
        };

        policy.spec.subjects = SubjectKind::Group;
        let group_only = build_desired(&policy, &users, &groups, &settings);
        policy.spec.subjects = SubjectKind::Both;
        let both = build_desired(&policy, &users, &groups, &settings);

        assert_eq!(group_only.outcome.subjects, vec![group_subject("g:Admins")]);
        assert_eq!(
            both.outcome.subjects,
            vec![
                group_subject("g:Admins"),
                user_subject("u:dave@example.com")
            ]
        );
    }

    #[test]
    fn subjects_of_several_groups_are_sorted_and_distinct() {
        let (users, mut groups) = directory();
        groups.push(group("g-more", "More", &["u-alice", "u-dave", "u-alice"]));
        let policy = policy(
            vec![by_name("Analysts"), by_name("more"), by_name("ANALYSTS")],
            vec![cluster_role("view", &[])],
        );

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(
            desired.outcome,
            PolicyOutcome {
                groups: vec!["Analysts".into(), "More".into()],
                subjects: vec![
                    user_subject("alice@example.com"),
                    user_subject("carol@example.com"),
                    user_subject("dave@example.com"),
                ],
                problems: vec![],
            }
        );
    }

    #[test]
    fn reserved_names_are_never_bound_and_are_reported() {
        let users = vec![
            user("u-1", "system:admin", true),
            user("u-2", "SYSTEM:kube-scheduler", true),
            user("u-3", "kubernetes-admin", true),
            user("u-4", "erin@example.com", true),
        ];
        let groups = vec![group(
            "g-1",
            "system:masters",
            &["u-1", "u-2", "u-3", "u-4"],
        )];
        let mut policy = policy(
            vec![by_name("system:masters")],
            vec![cluster_role("view", &[])],
        );
        policy.spec.subjects = SubjectKind::Both;

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(
            desired.outcome,
            PolicyOutcome {
                groups: vec!["system:masters".into()],
                subjects: vec![user_subject("erin@example.com")],
                problems: vec![
                    Problem::ReservedSubject {
                        kind: "Group",
                        name: "system:masters".into()
                    },
                    Problem::ReservedSubject {
                        kind: "User",
                        name: "SYSTEM:kube-scheduler".into()
                    },
                    Problem::ReservedSubject {
                        kind: "User",
                        name: "kubernetes-admin".into()
                    },
                    Problem::ReservedSubject {
                        kind: "User",
                        name: "system:admin".into()
                    },
                ],
            }
        );
        assert_eq!(
            desired.cluster_role_bindings[0].subjects,
            Some(vec![user_subject("erin@example.com")])
        );
    }

    #[test]
    fn a_prefix_moves_names_out_of_the_reserved_space_and_a_reserved_prefix_refuses_all() {
        let users = vec![user("u-1", "system:admin", true)];
        let groups = vec![group("g-1", "Ops", &["u-1"])];
        let policy = policy(vec![by_name("Ops")], vec![cluster_role("view", &[])]);
        let prefixed = ControllerSettings {
            user_prefix: "oidc:".into(),
            ..Default::default()
        };
        let reserved = ControllerSettings {
            user_prefix: "system:".into(),
            ..Default::default()
        };

        let with_prefix = build_desired(&policy, &users, &groups, &prefixed);
        let with_reserved = build_desired(&policy, &users, &groups, &reserved);

        assert_eq!(
            with_prefix.outcome.subjects,
            vec![user_subject("oidc:system:admin")]
        );
        assert_eq!(with_reserved.outcome.subjects, vec![]);
        assert_eq!(
            with_reserved.outcome.problems,
            vec![Problem::ReservedSubject {
                kind: "User",
                name: "system:system:admin".into()
            }]
        );
    }

    #[test]
    fn a_role_outside_the_allow_list_makes_the_whole_policy_grant_nothing() {
        let (users, groups) = directory();
        let policy = policy(
            vec![by_name("Analysts")],
            vec![
                cluster_role("view", &[]),
                cluster_role("cluster-admin", &[]),
            ],
        );
        let settings = ControllerSettings {
            allowed_roles: Some(vec!["ClusterRole/view".into(), "Role/reader".into()]),
            ..Default::default()
        };

        let desired = build_desired(&policy, &users, &groups, &settings);

        assert_eq!(
            desired,
            DesiredAccess {
                cluster_role_bindings: vec![],
                role_bindings: vec![],
                outcome: PolicyOutcome {
                    groups: vec!["Analysts".into()],
                    subjects: vec![],
                    problems: vec![Problem::RoleNotAllowed {
                        kind: "ClusterRole",
                        name: "cluster-admin".into()
                    }],
                },
            }
        );
    }

    #[test]
    fn allow_list_entries_match_by_kind_or_by_bare_name() {
        let (users, groups) = directory();
        let settings = ControllerSettings {
            allowed_roles: Some(vec!["ClusterRole/view".into(), "reader".into()]),
            ..Default::default()
        };
        let grants_of = |grant: Grant| policy(vec![by_name("Admins")], vec![grant]);

        let view = build_desired(
            &grants_of(cluster_role("view", &[])),
            &users,
            &groups,
            &settings,
        );
        let reader = build_desired(
            &grants_of(role("reader", &["a"])),
            &users,
            &groups,
            &settings,
        );
        let role_view = build_desired(&grants_of(role("view", &["a"])), &users, &groups, &settings);

        assert_eq!(view.outcome.problems, vec![]);
        assert_eq!(reader.outcome.problems, vec![]);
        assert_eq!(
            role_view.outcome.problems,
            vec![Problem::RoleNotAllowed {
                kind: "Role",
                name: "view".into()
            }]
        );
        assert_eq!(role_view.binding_count(), 0);
    }

    #[test]
    fn malformed_grants_and_selectors_make_the_policy_grant_nothing() {
        let (users, groups) = directory();
        let both = Grant {
            cluster_role: Some("view".into()),
            role: Some("reader".into()),
            namespaces: vec!["a".into()],
        };
        let policy = policy(
            vec![by_name("Admins"), GroupSelector::default()],
            vec![
                cluster_role("view", &[]),
                role("reader", &[]),
                both,
                Grant::default(),
                cluster_role("view", &["Not_A_Namespace"]),
            ],
        );

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        let invalid = |index, reason: &str| Problem::InvalidGrant {
            index,
            reason: reason.into(),
        };
        assert_eq!(
            desired,
            DesiredAccess {
                cluster_role_bindings: vec![],
                role_bindings: vec![],
                outcome: PolicyOutcome {
                    groups: vec!["Admins".into()],
                    subjects: vec![],
                    problems: vec![
                        Problem::InvalidSelector {
                            index: 1,
                            reason: "sets none of displayName, externalId and id".into()
                        },
                        invalid(1, "grants Role \"reader\" but lists no namespaces"),
                        invalid(2, "sets both clusterRole and role"),
                        invalid(3, "sets neither clusterRole nor role"),
                        invalid(
                            4,
                            "lists \"Not_A_Namespace\", which is not a valid namespace name"
                        ),
                    ],
                },
            }
        );
    }

    #[test]
    fn an_unknown_group_is_reported_while_the_other_groups_still_grant() {
        let (users, groups) = directory();
        let policy = policy(
            vec![
                by_name("Nobody"),
                GroupSelector {
                    external_id: Some("ext-g-admins".into()),
                    ..Default::default()
                },
                GroupSelector {
                    id: Some("g-missing".into()),
                    ..Default::default()
                },
            ],
            vec![cluster_role("view", &[])],
        );

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(
            desired.outcome,
            PolicyOutcome {
                groups: vec!["Admins".into()],
                subjects: vec![user_subject("dave@example.com")],
                problems: vec![
                    Problem::UnknownGroup {
                        selector: "displayName \"Nobody\"".into()
                    },
                    Problem::UnknownGroup {
                        selector: "id \"g-missing\"".into()
                    },
                ],
            }
        );
        assert_eq!(desired.binding_count(), 1);
    }

    #[test]
    fn groups_no_policy_selects_and_objects_of_other_tenants_grant_nothing() {
        let (mut users, mut groups) = directory();
        let mut foreign_user = user("u-eve", "eve@example.com", true);
        foreign_user.metadata.namespace = Some("other-tenant".into());
        users.push(foreign_user);
        let mut foreign_group = group("g-x", "Admins", &["u-eve"]);
        foreign_group.metadata.namespace = Some("other-tenant".into());
        groups.push(foreign_group);
        groups[1].spec.members.push(GroupMember {
            value: "u-eve".into(),
            ..Default::default()
        });
        let policy = policy(vec![by_name("Admins")], vec![cluster_role("view", &[])]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(desired.outcome.groups, vec!["Admins".to_string()]);
        assert_eq!(
            desired.outcome.subjects,
            vec![user_subject("dave@example.com")]
        );
    }

    #[test]
    fn a_duplicated_user_id_with_an_inactive_record_grants_nothing() {
        let (mut users, groups) = directory();
        users.push(user("u-dave", "dave2@example.com", false));
        let policy = policy(vec![by_name("Admins")], vec![cluster_role("view", &[])]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(desired.outcome.subjects, vec![]);
    }

    #[test]
    fn repeated_grants_yield_one_binding_each() {
        let (users, groups) = directory();
        let policy = policy(
            vec![by_name("Admins")],
            vec![
                cluster_role("view", &["a", "a"]),
                cluster_role("view", &["a"]),
                role("view", &["a"]),
                cluster_role("view", &[]),
                cluster_role("view", &[]),
            ],
        );

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        let names: Vec<_> = desired
            .role_bindings
            .iter()
            .map(|b| (b.metadata.namespace.clone(), b.metadata.name.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                (Some("a".into()), Some("scim-analysts-c-view".into())),
                (Some("a".into()), Some("scim-analysts-r-view".into())),
            ]
        );
        assert_eq!(desired.cluster_role_bindings.len(), 1);
    }

    #[test]
    fn a_policy_never_stored_in_a_cluster_yields_bindings_without_owner() {
        let (users, groups) = directory();
        let mut policy = policy(vec![by_name("Admins")], vec![cluster_role("view", &[])]);
        policy.metadata.uid = None;

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(
            desired.cluster_role_bindings[0].metadata.owner_references,
            None
        );
    }

    #[test]
    fn names_are_kept_when_valid_and_rewritten_with_a_hash_otherwise() {
        assert_eq!(
            build_cluster_role_binding_name("team.a", "view"),
            "scim-team.a-view"
        );
        assert_eq!(
            build_cluster_role_binding_name("p", "system:aggregate-to-view"),
            format!(
                "scim-p-system-aggregate-to-view-{}",
                &sha_hex("scim-p-system:aggregate-to-view")[..8]
            )
        );
        assert_ne!(
            build_role_binding_name("p", "Role", "Reader"),
            build_role_binding_name("p", "Role", "reader")
        );
        assert_eq!(
            build_role_binding_name("p", "ClusterRole", "view"),
            "scim-p-c-view"
        );
    }

    #[test]
    fn long_names_are_capped_with_a_hash_suffix() {
        let role = "r".repeat(300);
        let name = build_cluster_role_binding_name("p", &role);
        let label = build_policy_label_value(&"p".repeat(70));

        assert_eq!(name.len(), 253);
        assert!(name.starts_with("scim-p-rrr"));
        assert!(name.ends_with(&sha_hex(&format!("scim-p-{role}"))[..8]));
        assert_eq!(label.len(), 63);
        assert_eq!(
            label,
            format!("{}-{}", "p".repeat(54), &sha_hex(&"p".repeat(70))[..8])
        );
    }

    #[test]
    fn rewritten_names_are_dns1123_subdomains() {
        for raw in [
            "A..B",
            "-x-",
            "..",
            "a.-b",
            "Ünïcode:role",
            "a_b.c_d",
            &"x.".repeat(200),
        ] {
            let name = build_name(raw, MAX_NAME_LEN);

            assert!(is_dns1123_subdomain(&name), "{raw:?} -> {name:?}");
        }
    }

    fn sha_hex(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}
