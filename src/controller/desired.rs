//! The bindings an AccessPolicy implies: a pure function of the policy, the users, groups and
//! namespaces of a [`Snapshot`], the bindings that exist ([`CurrentAccess`]) and the
//! [`ControllerSettings`]. No I/O happens here.
//!
//! Guarantees, whatever the directory holds:
//! - only active users who are members of a selected group become subjects;
//! - a subject whose name reaches a reserved identity is never bound;
//! - a policy with a malformed grant or selector, or naming a role outside the allow-list,
//!   grants nothing new (it fails closed rather than granting a guess);
//! - a subject loses access only as [`revocation`](super::revocation) allows: what the
//!   directory does not explain is kept while it looks like an error;
//! - no binding holds more than [`MAX_SUBJECTS_PER_BINDING`] subjects or
//!   [`MAX_SUBJECT_BYTES_PER_BINDING`] bytes of them: a role with many subjects is bound
//!   through several bindings, each subject in the one its name hashes to, so that one member
//!   more or less rewrites one binding;
//! - the result is deterministic: sorted objects, sorted distinct subjects, stable names.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::directory::{GroupView, Snapshot, TenantView};
use super::revocation::{self, Cause, Hold, ReviewInput};
use super::selector::{matches_label_selector, validate_label_selector};
use super::status::{
    REASON_INVALID_GRANT, REASON_INVALID_SELECTOR, REASON_RESERVED_SUBJECT,
    REASON_ROLE_NOT_ALLOWED, REASON_UNKNOWN_GROUP,
};
use super::{ControllerSettings, POLICY_LABEL};
use crate::resources::{
    AccessPolicy, Grant, GroupSelector, MANAGED_BY, MANAGED_BY_LABEL, ScimGroup, ScimUser,
    SelectedGroup, SubjectKind,
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
/// Subjects per binding that splitting aims for at most; a binding of this many User
/// subjects takes a few hundred KiB.
pub const TARGET_SUBJECTS_PER_BINDING: usize = 4_000;
/// No binding holds more subjects than this.
pub const MAX_SUBJECTS_PER_BINDING: usize = 5_000;
/// No binding holds more bytes of subjects than this, which keeps every binding well below
/// the object size etcd accepts (about 1.5 MiB) whatever the length of the names.
pub const MAX_SUBJECT_BYTES_PER_BINDING: usize = 1024 * 1024;

/// Bytes a subject takes in a stored binding besides its kind and name: field names, the
/// API group and punctuation.
const SUBJECT_OVERHEAD_BYTES: usize = 64;
/// Bindings per role and place at most; only names of absurd length could ask for more.
const MAX_BINDINGS_PER_TARGET: usize = 1 << 16;
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
    /// Revocations this pass holds back, and why; the bindings above keep those subjects.
    pub hold: Option<Hold>,
    /// Why each subject whose bindings change gains or loses them, for the audit trail.
    pub explanations: BTreeMap<SubjectKey, Explanation>,
}

impl DesiredAccess {
    /// Number of bindings of both kinds.
    pub fn binding_count(&self) -> usize {
        self.cluster_role_bindings.len() + self.role_bindings.len()
    }

    /// The subjects of every binding, by the role and place they are bound to.
    pub fn subjects_by_target(&self) -> BTreeMap<Target, BTreeSet<SubjectKey>> {
        let mut targets: BTreeMap<Target, BTreeSet<SubjectKey>> = BTreeMap::new();
        let cluster = self
            .cluster_role_bindings
            .iter()
            .map(|b| (None, &b.role_ref, b.subjects.as_deref()));
        let namespaced = self.role_bindings.iter().map(|b| {
            (
                b.metadata.namespace.as_deref(),
                &b.role_ref,
                b.subjects.as_deref(),
            )
        });
        for (namespace, role_ref, subjects) in cluster.chain(namespaced) {
            if let Some(target) = Target::of_role_ref(namespace, role_ref) {
                let entry = targets.entry(target).or_default();
                entry.extend(subjects.unwrap_or_default().iter().map(SubjectKey::of));
            }
        }
        targets
    }
}

/// What a policy resolved to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyOutcome {
    /// displayNames of the selected groups that exist, sorted.
    pub groups: Vec<String>,
    /// The selected groups that exist, by id and displayName, sorted.
    pub selected_groups: Vec<SelectedGroup>,
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

/// Why one subject gains or loses bindings in a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Why access changes; for a subject the policy still grants, a binding it loses was
    /// dropped with its namespace or grant.
    pub cause: Cause,
    /// displayNames of the groups concerned: the selected groups that list the member, or
    /// the groups that vanished.
    pub groups: Vec<String>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    /// A ClusterRole.
    Cluster,
    /// A Role of the binding's namespace.
    Namespaced,
}

impl RoleKind {
    /// The kind as a roleRef names it.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Cluster => CLUSTER_ROLE,
            RoleKind::Namespaced => ROLE,
        }
    }
}

/// A role and where it is bound: cluster-wide (no namespace) or in one namespace. A target
/// with many subjects is bound through several bindings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// The namespace of the RoleBindings; `None` for ClusterRoleBindings.
    pub namespace: Option<String>,
    /// The kind of role.
    pub role_kind: RoleKind,
    /// The role's name.
    pub role: String,
}

impl Target {
    /// The target of a binding in `namespace` (`None` for a ClusterRoleBinding) with
    /// `role_ref`; `None` for a roleRef of an unknown kind.
    pub fn of_role_ref(namespace: Option<&str>, role_ref: &RoleRef) -> Option<Self> {
        let role_kind = match role_ref.kind.as_str() {
            CLUSTER_ROLE => RoleKind::Cluster,
            ROLE if namespace.is_some() => RoleKind::Namespaced,
            _ => return None,
        };
        Some(Self {
            namespace: namespace.map(str::to_string),
            role_kind,
            role: role_ref.name.clone(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.role_kind.as_str();
        match &self.namespace {
            Some(namespace) => write!(f, "{kind} {} in namespace {namespace}", self.role),
            None => write!(f, "{kind} {} cluster-wide", self.role),
        }
    }
}

/// A binding subject by kind and name, ordered as bindings list them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectKey {
    /// `User`, `Group`, or a kind others wrote.
    pub kind: String,
    /// The subject's name.
    pub name: String,
}

impl SubjectKey {
    /// The key of `subject`.
    pub fn of(subject: &Subject) -> Self {
        Self {
            kind: subject.kind.clone(),
            name: subject.name.clone(),
        }
    }

    /// The subject a binding holds for this key.
    pub fn to_subject(&self) -> Subject {
        build_subject(&self.kind, self.name.clone())
    }
}

impl fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The bindings of one policy that exist, by target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurrentAccess {
    /// What each target holds.
    pub targets: BTreeMap<Target, CurrentTarget>,
}

/// The existing bindings of one target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurrentTarget {
    /// Every subject of any of them.
    pub subjects: BTreeSet<SubjectKey>,
    /// How many bindings there are.
    pub bindings: usize,
}

impl CurrentAccess {
    /// What `cluster_role_bindings` and `role_bindings` (of one policy) hold.
    pub fn from_bindings<C, R>(cluster_role_bindings: &[C], role_bindings: &[R]) -> Self
    where
        C: Borrow<ClusterRoleBinding>,
        R: Borrow<RoleBinding>,
    {
        let mut current = Self::default();
        let cluster = cluster_role_bindings.iter().map(|b| {
            let b = b.borrow();
            (None, &b.role_ref, b.subjects.as_deref())
        });
        let namespaced = role_bindings.iter().map(|b| {
            let b = b.borrow();
            (
                b.metadata.namespace.as_deref(),
                &b.role_ref,
                b.subjects.as_deref(),
            )
        });
        for (namespace, role_ref, subjects) in cluster.chain(namespaced) {
            let Some(target) = Target::of_role_ref(namespace, role_ref) else {
                continue;
            };
            let entry = current.targets.entry(target).or_default();
            entry.bindings += 1;
            entry
                .subjects
                .extend(subjects.unwrap_or_default().iter().map(SubjectKey::of));
        }
        current
    }

    /// Every subject bound through any target.
    pub fn subjects(&self) -> BTreeSet<&SubjectKey> {
        self.targets.values().flat_map(|t| &t.subjects).collect()
    }
}

/// The subjects each target should hold after a pass.
pub(crate) type Plan = BTreeMap<Target, BTreeSet<SubjectKey>>;

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

/// Builds the bindings `policy` implies over the users and groups of its tenant, as if none
/// existed yet: no namespaces are known, so namespace selectors match nothing.
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
    let snapshot = Snapshot::new(users, groups);
    build_policy_access(policy, &snapshot, &CurrentAccess::default(), settings)
}

/// Builds the bindings `policy` implies over `snapshot`, given the bindings of the policy
/// that exist (`current`): what the policy grants, split into bindings of bounded size, plus
/// whatever revocations are held.
pub fn build_policy_access(
    policy: &AccessPolicy,
    snapshot: &Snapshot<'_>,
    current: &CurrentAccess,
    settings: &ControllerSettings,
) -> DesiredAccess {
    let tenant = policy.spec.tenant.as_str();
    let view = TenantView::build(snapshot, tenant);
    let mut problems = Vec::new();

    // Validate: a malformed spec or a role outside the allow-list stops the whole policy.
    let keys = validate_selectors(&policy.spec.groups, &mut problems);
    let targets = validate_grants(&policy.spec.grants, snapshot, settings, &mut problems);

    // Resolve: the selected groups of the tenant, then the subjects they yield.
    let selected = select_groups(&keys, &view, &mut problems);
    let subjects = build_subjects(
        policy.spec.subjects,
        &selected,
        &view,
        settings,
        &mut problems,
    );
    let mut selected_groups: Vec<SelectedGroup> = selected
        .iter()
        .map(|g| SelectedGroup {
            id: g.group.spec.id.clone(),
            display_name: g.group.spec.display_name.clone(),
        })
        .collect();
    selected_groups.sort();
    let mut outcome = PolicyOutcome {
        groups: selected
            .iter()
            .map(|g| g.group.spec.display_name.clone())
            .collect(),
        selected_groups,
        subjects,
        problems,
    };

    // Plan: every target holds every subject, unless the policy is blocked.
    let resolved: BTreeSet<SubjectKey> = outcome.subjects.iter().map(SubjectKey::of).collect();
    let blocked = outcome.is_blocked();
    let mut plan: Plan = BTreeMap::new();
    if !blocked {
        for target in targets {
            plan.insert(target, resolved.clone());
        }
    }

    // Guard: revocations the directory does not explain may be held.
    let mut live = current.clone();
    live.targets.retain(|t, _| {
        t.namespace
            .as_deref()
            .is_none_or(|ns| snapshot.is_namespace_live(ns))
    });
    let input = ReviewInput {
        policy,
        settings,
        view: &view,
        selected: &selected,
        resolved: &resolved,
        allow_list_refused: outcome
            .problems
            .iter()
            .any(|p| matches!(p, Problem::RoleNotAllowed { .. })),
        blocked,
    };
    let review = revocation::review(&input, &plan, &live);
    if let Some(hold) = &review.hold {
        revocation::keep_held(&mut plan, &live, hold);
    }
    if blocked {
        outcome.subjects.clear();
    }

    // Build: the bindings of each target, and why subjects gain or lose them.
    let explanations = build_explanations(&plan, current, &review.causes, &input, &review.vanished);
    let (cluster_role_bindings, role_bindings) = build_bindings(policy, &plan, current);
    DesiredAccess {
        cluster_role_bindings,
        role_bindings,
        outcome,
        hold: review.hold,
        explanations,
    }
}

/// Name of the ClusterRoleBinding through which `policy` grants `cluster_role`, when one
/// binding holds all its subjects.
pub fn build_cluster_role_binding_name(policy: &str, cluster_role: &str) -> String {
    build_name(&format!("scim-{policy}-{cluster_role}"), MAX_NAME_LEN)
}

/// Name of a RoleBinding through which `policy` grants a role, when one binding holds all
/// its subjects; `role_kind` is `ClusterRole` or `Role`.
pub fn build_role_binding_name(policy: &str, role_kind: &str, role: &str) -> String {
    build_name(
        &build_role_binding_raw_name(policy, role_kind, role),
        MAX_NAME_LEN,
    )
}

/// Name of binding `shard` of the `shards` through which `policy` grants `target`.
///
/// One binding keeps the plain name. Split bindings add the shard after a `/`, which no role
/// or policy name can hold, so that the rewritten name (with its hash) never equals the name
/// of another target of the same policy.
pub fn build_binding_name(policy: &str, target: &Target, shard: usize, shards: usize) -> String {
    let raw = match &target.namespace {
        None => format!("scim-{policy}-{}", target.role),
        Some(_) => build_role_binding_raw_name(policy, target.role_kind.as_str(), &target.role),
    };
    if shards <= 1 {
        build_name(&raw, MAX_NAME_LEN)
    } else {
        build_name(&format!("{raw}/{shard}"), MAX_NAME_LEN)
    }
}

fn build_role_binding_raw_name(policy: &str, role_kind: &str, role: &str) -> String {
    // The marker keeps a binding to ClusterRole `x` apart from one to Role `x`.
    let marker = if role_kind == CLUSTER_ROLE { "c" } else { "r" };
    format!("scim-{policy}-{marker}-{role}")
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

/// How many bindings a target with `subjects` subjects is split into: a power of two that
/// keeps the average at or below [`TARGET_SUBJECTS_PER_BINDING`]. The count that exists is
/// kept while it is a power of two that is large enough and not four times too large, so
/// that a group hovering around a boundary does not reshuffle its bindings on every change.
pub fn compute_binding_count(subjects: usize, existing: Option<usize>) -> usize {
    let wanted = subjects
        .div_ceil(TARGET_SUBJECTS_PER_BINDING)
        .max(1)
        .next_power_of_two();
    match existing {
        Some(n)
            if n.is_power_of_two()
                && n >= wanted
                && (n == 1 || subjects > n * TARGET_SUBJECTS_PER_BINDING / 4) =>
        {
            n
        }
        _ => wanted,
    }
}

/// The binding of `count` that `subject` belongs to: a hash of its kind and name, so that a
/// subject stays where it is while the count stays, and doubling the count splits each
/// binding in two.
pub fn compute_binding_of(subject: &SubjectKey, count: usize) -> usize {
    let mut hasher = Sha256::new();
    hasher.update(subject.kind.as_bytes());
    hasher.update([0]);
    hasher.update(subject.name.as_bytes());
    let digest = hasher.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let count = u64::try_from(count.max(1)).unwrap_or(u64::MAX);
    usize::try_from(u64::from_be_bytes(head) % count).unwrap_or_default()
}

/// Splits a target's subjects into bindings within [`MAX_SUBJECTS_PER_BINDING`] and
/// [`MAX_SUBJECT_BYTES_PER_BINDING`], doubling the count until every binding fits.
fn split_subjects(
    subjects: &BTreeSet<SubjectKey>,
    existing: Option<usize>,
) -> Vec<Vec<&SubjectKey>> {
    let mut count = compute_binding_count(subjects.len(), existing);
    loop {
        let mut shards: Vec<Vec<&SubjectKey>> = vec![Vec::new(); count];
        let mut bytes = vec![0usize; count];
        for subject in subjects {
            let shard = compute_binding_of(subject, count);
            shards[shard].push(subject);
            bytes[shard] += subject.kind.len() + subject.name.len() + SUBJECT_OVERHEAD_BYTES;
        }
        let fits = shards.iter().all(|s| s.len() <= MAX_SUBJECTS_PER_BINDING)
            && bytes.iter().all(|b| *b <= MAX_SUBJECT_BYTES_PER_BINDING);
        if fits || count >= MAX_BINDINGS_PER_TARGET {
            return shards;
        }
        count *= 2;
    }
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
    snapshot: &Snapshot<'_>,
    settings: &ControllerSettings,
    problems: &mut Vec<Problem>,
) -> Vec<Target> {
    let live = snapshot.live_namespaces();
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
                "names {role:?}, which is not a valid role name"
            )));
            continue;
        }
        let selector = grant.namespace_selector.as_ref();
        if kind == RoleKind::Namespaced && grant.namespaces.is_empty() && selector.is_none() {
            problems.push(invalid(format!(
                "grants Role {role:?} but lists no namespaces and sets no namespaceSelector"
            )));
            continue;
        }
        if let Some(ns) = grant.namespaces.iter().find(|ns| !is_dns1123_label(ns)) {
            problems.push(invalid(format!(
                "lists {ns:?}, which is not a valid namespace name"
            )));
            continue;
        }
        if let Some(Err(reason)) = selector.map(validate_label_selector) {
            problems.push(invalid(format!("has a namespaceSelector that {reason}")));
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
        let in_namespace = |namespace: &str| Target {
            namespace: Some(namespace.to_string()),
            role_kind: kind,
            role: role.clone(),
        };
        if grant.namespaces.is_empty() && selector.is_none() {
            targets.push(Target {
                namespace: None,
                role_kind: RoleKind::Cluster,
                role: role.clone(),
            });
        }
        targets.extend(grant.namespaces.iter().map(|ns| in_namespace(ns)));
        if let Some(selector) = selector {
            let matched = live
                .iter()
                .filter(|(_, labels)| matches_label_selector(selector, labels));
            targets.extend(matched.map(|(ns, _)| in_namespace(ns)));
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

fn select_groups<'v, 'a>(
    keys: &[GroupKey<'_>],
    view: &'v TenantView<'a>,
    problems: &mut Vec<Problem>,
) -> Vec<&'v GroupView<'a>> {
    let mut selected: BTreeMap<(&str, &str), &GroupView> = BTreeMap::new();
    for key in keys {
        let mut matched = false;
        for group in view.groups.iter().filter(|g| key.matches(g.group)) {
            matched = true;
            let spec = &group.group.spec;
            selected.insert((&spec.display_name, &spec.id), group);
        }
        if !matched {
            problems.push(Problem::UnknownGroup {
                selector: key.to_string(),
            });
        }
    }
    selected.into_values().collect()
}

fn build_subjects(
    kind: SubjectKind,
    groups: &[&GroupView<'_>],
    view: &TenantView<'_>,
    settings: &ControllerSettings,
    problems: &mut Vec<Problem>,
) -> Vec<Subject> {
    let mut subjects = Vec::new();
    for group in groups {
        if matches!(kind, SubjectKind::User | SubjectKind::Both) {
            let members = group
                .members
                .iter()
                .filter_map(|m| view.users_by_id.get(m.value.as_str()));
            for user in members.filter(|u| u.spec.is_active()) {
                let name = format!("{}{}", settings.user_prefix, user.spec.user_name);
                subjects.push(build_subject(USER_SUBJECT, name));
            }
        }
        if matches!(kind, SubjectKind::Group | SubjectKind::Both) {
            let name = format!("{}{}", settings.group_prefix, group.group.spec.display_name);
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

/// Why each subject whose bindings differ between `current` and `plan` gains or loses them.
fn build_explanations(
    plan: &Plan,
    current: &CurrentAccess,
    causes: &BTreeMap<SubjectKey, Cause>,
    input: &ReviewInput<'_>,
    vanished: &[SelectedGroup],
) -> BTreeMap<SubjectKey, Explanation> {
    let empty = BTreeSet::new();
    let mut changed: BTreeSet<&SubjectKey> = BTreeSet::new();
    for target in plan.keys().chain(current.targets.keys()) {
        let after = plan.get(target).unwrap_or(&empty);
        let before = current.targets.get(target).map_or(&empty, |t| &t.subjects);
        changed.extend(after.symmetric_difference(before));
    }
    if changed.is_empty() {
        return BTreeMap::new();
    }
    let settings = input.settings;
    let mut groups_of_user: HashMap<&str, Vec<&str>> = HashMap::new();
    for group in input.selected {
        for member in &group.members {
            if let Some(user) = input.view.users_by_id.get(member.value.as_str()) {
                let groups = groups_of_user
                    .entry(user.spec.user_name.as_str())
                    .or_default();
                groups.push(group.group.spec.display_name.as_str());
            }
        }
    }
    let vanished: Vec<String> = vanished.iter().map(|g| g.display_name.clone()).collect();
    changed
        .into_iter()
        .map(|subject| {
            let cause = causes.get(subject).copied().unwrap_or(Cause::Granted);
            let groups = if cause == Cause::GroupGone {
                vanished.clone()
            } else if subject.kind == USER_SUBJECT {
                let user_name = subject.name.strip_prefix(settings.user_prefix.as_str());
                let listed = user_name.and_then(|n| groups_of_user.get(n));
                let mut names: Vec<String> = listed
                    .into_iter()
                    .flatten()
                    .map(|g| g.to_string())
                    .collect();
                names.sort();
                names.dedup();
                names
            } else {
                let display = subject.name.strip_prefix(settings.group_prefix.as_str());
                input
                    .selected
                    .iter()
                    .map(|g| &g.group.spec.display_name)
                    .filter(|name| Some(name.as_str()) == display)
                    .cloned()
                    .collect()
            };
            (subject.clone(), Explanation { cause, groups })
        })
        .collect()
}

fn build_bindings(
    policy: &AccessPolicy,
    plan: &Plan,
    current: &CurrentAccess,
) -> (Vec<ClusterRoleBinding>, Vec<RoleBinding>) {
    let policy_name = policy.name_any();
    let mut cluster = BTreeMap::new();
    let mut namespaced = BTreeMap::new();
    for (target, subjects) in plan {
        let existing = current.targets.get(target).map(|t| t.bindings);
        let shards = split_subjects(subjects, existing);
        let count = shards.len();
        let role_ref = build_role_ref(target.role_kind, &target.role);
        for (shard, members) in shards.into_iter().enumerate() {
            let name = build_binding_name(&policy_name, target, shard, count);
            let subjects = Some(members.into_iter().map(SubjectKey::to_subject).collect());
            match &target.namespace {
                None => {
                    let binding = ClusterRoleBinding {
                        metadata: build_metadata(policy, &name, None),
                        role_ref: role_ref.clone(),
                        subjects,
                    };
                    cluster.insert(name, binding);
                }
                Some(namespace) => {
                    let binding = RoleBinding {
                        metadata: build_metadata(policy, &name, Some(namespace)),
                        role_ref: role_ref.clone(),
                        subjects,
                    };
                    namespaced.insert((namespace.clone(), name), binding);
                }
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
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

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
                ..ScimGroupSpec::default()
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
                ..AccessPolicySpec::default()
            },
        );
        policy.metadata.uid = Some("policy-uid".into());
        policy
    }

    fn selected(groups: &[(&str, &str)]) -> Vec<SelectedGroup> {
        groups
            .iter()
            .map(|(id, name)| SelectedGroup {
                id: id.to_string(),
                display_name: name.to_string(),
            })
            .collect()
    }

    fn granted(subjects: &[(&str, &[&str])]) -> BTreeMap<SubjectKey, Explanation> {
        subjects
            .iter()
            .map(|(name, groups)| {
                let explanation = Explanation {
                    cause: Cause::Granted,
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                };
                (key(name), explanation)
            })
            .collect()
    }

    fn key(user_name: &str) -> SubjectKey {
        SubjectKey {
            kind: USER_SUBJECT.into(),
            name: user_name.into(),
        }
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
                selected_groups: selected(&[("g-analysts", "Analysts")]),
                subjects,
                problems: vec![],
            },
            hold: None,
            explanations: granted(&[
                ("alice@example.com", &["Analysts"]),
                ("carol@example.com", &["Analysts"]),
            ]),
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
                selected_groups: selected(&[("g-admins", "Admins")]),
                subjects,
                problems: vec![],
            },
            hold: None,
            explanations: granted(&[("oidc:dave@example.com", &["Admins"])]),
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
            ..ControllerSettings::default()
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
                selected_groups: selected(&[("g-analysts", "Analysts"), ("g-more", "More")]),
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
                selected_groups: selected(&[("g-1", "system:masters")]),
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
                    selected_groups: selected(&[("g-analysts", "Analysts")]),
                    subjects: vec![],
                    problems: vec![Problem::RoleNotAllowed {
                        kind: "ClusterRole",
                        name: "cluster-admin".into()
                    }],
                },
                hold: None,
                explanations: BTreeMap::new(),
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
            ..Grant::default()
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
                    selected_groups: selected(&[("g-admins", "Admins")]),
                    subjects: vec![],
                    problems: vec![
                        Problem::InvalidSelector {
                            index: 1,
                            reason: "sets none of displayName, externalId and id".into()
                        },
                        invalid(
                            1,
                            "grants Role \"reader\" but lists no namespaces and sets no \
                             namespaceSelector"
                        ),
                        invalid(2, "sets both clusterRole and role"),
                        invalid(3, "sets neither clusterRole nor role"),
                        invalid(
                            4,
                            "lists \"Not_A_Namespace\", which is not a valid namespace name"
                        ),
                    ],
                },
                hold: None,
                explanations: BTreeMap::new(),
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
                selected_groups: selected(&[("g-admins", "Admins")]),
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

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.into());
        namespace.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        namespace
    }

    fn by_label(key: &str, value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            match_expressions: None,
        }
    }

    fn binding_places(desired: &DesiredAccess) -> Vec<(String, String)> {
        desired
            .role_bindings
            .iter()
            .map(|b| (b.namespace().unwrap_or_default(), b.name_any()))
            .collect()
    }

    #[test]
    fn a_namespace_selector_binds_in_every_live_matching_namespace_and_the_listed_ones() {
        let (users, groups) = directory();
        let mut terminating = namespace("team-old", &[("team", "data")]);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let namespaces = vec![
            namespace("team-a", &[("team", "data")]),
            namespace("team-b", &[("team", "web")]),
            namespace("team-c", &[("team", "data"), ("tier", "prod")]),
            terminating,
        ];
        let mut grant = role("reader", &["listed"]);
        grant.namespace_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("team".into(), "data".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["staging".into()]),
            }]),
        });
        let policy = policy(vec![by_name("Admins")], vec![grant]);
        let snapshot = Snapshot::new(&users, &groups).with_namespaces(&namespaces);

        let desired = build_policy_access(
            &policy,
            &snapshot,
            &CurrentAccess::default(),
            &ControllerSettings::default(),
        );

        let binding = |ns: &str| ((ns.to_string()), "scim-analysts-r-reader".to_string());
        assert_eq!(
            binding_places(&desired),
            vec![binding("listed"), binding("team-a"), binding("team-c")]
        );
        assert_eq!(desired.cluster_role_bindings, vec![]);
    }

    #[test]
    fn a_cluster_role_with_a_selector_that_matches_nothing_is_not_bound_cluster_wide() {
        let (users, groups) = directory();
        let mut grant = cluster_role("view", &[]);
        grant.namespace_selector = Some(by_label("team", "nobody"));
        let policy = policy(vec![by_name("Admins")], vec![grant]);
        let namespaces = vec![namespace("team-a", &[("team", "data")])];
        let snapshot = Snapshot::new(&users, &groups).with_namespaces(&namespaces);

        let desired = build_policy_access(
            &policy,
            &snapshot,
            &CurrentAccess::default(),
            &ControllerSettings::default(),
        );

        assert_eq!(desired.binding_count(), 0);
        assert_eq!(desired.outcome.problems, vec![]);
    }

    #[test]
    fn a_malformed_namespace_selector_makes_the_policy_grant_nothing() {
        let (users, groups) = directory();
        let mut grant = cluster_role("view", &[]);
        grant.namespace_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "In".into(),
                values: None,
            }]),
        });
        let policy = policy(vec![by_name("Admins")], vec![grant]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert_eq!(
            desired.outcome.problems,
            vec![Problem::InvalidGrant {
                index: 0,
                reason: "has a namespaceSelector that matchExpressions[0] uses In without values"
                    .into()
            }]
        );
        assert_eq!(desired.binding_count(), 0);
    }

    #[test]
    fn a_label_change_moves_the_binding_and_explains_the_move() {
        let (users, groups) = directory();
        let mut grant = cluster_role("view", &[]);
        grant.namespace_selector = Some(by_label("team", "data"));
        let policy = policy(vec![by_name("Admins")], vec![grant]);
        let before = vec![
            namespace("team-a", &[("team", "data")]),
            namespace("team-b", &[]),
        ];
        let after = vec![
            namespace("team-a", &[]),
            namespace("team-b", &[("team", "data")]),
        ];
        let settings = ControllerSettings::default();
        let first = build_policy_access(
            &policy,
            &Snapshot::new(&users, &groups).with_namespaces(&before),
            &CurrentAccess::default(),
            &settings,
        );
        let current =
            CurrentAccess::from_bindings(&first.cluster_role_bindings, &first.role_bindings);

        let moved = build_policy_access(
            &policy,
            &Snapshot::new(&users, &groups).with_namespaces(&after),
            &current,
            &settings,
        );

        assert_eq!(
            binding_places(&moved),
            vec![("team-b".to_string(), "scim-analysts-c-view".to_string())]
        );
        assert_eq!(moved.hold, None);
        assert_eq!(
            moved.explanations,
            granted(&[("dave@example.com", &["Admins"])])
        );
    }

    fn many_users(count: usize) -> (Vec<ScimUser>, Vec<ScimGroup>) {
        let users: Vec<ScimUser> = (0..count)
            .map(|i| user(&format!("u{i}"), &format!("user{i:05}@example.com"), true))
            .collect();
        let ids: Vec<String> = (0..count).map(|i| format!("u{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        (users, vec![group("g-all", "All", &ids)])
    }

    #[test]
    fn a_large_group_is_split_into_bindings_within_the_size_limits() {
        let (users, groups) = many_users(50_000);
        let policy = policy(vec![by_name("All")], vec![cluster_role("view", &[])]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        let sizes: Vec<usize> = desired
            .cluster_role_bindings
            .iter()
            .map(|b| b.subjects.as_ref().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes.len(), 16);
        assert_eq!(sizes.iter().sum::<usize>(), 50_000);
        assert!(
            sizes.iter().all(|n| *n <= MAX_SUBJECTS_PER_BINDING),
            "{sizes:?}"
        );
        for binding in &desired.cluster_role_bindings {
            let bytes = serde_json::to_vec(binding).unwrap().len();
            assert!(bytes < MAX_SUBJECT_BYTES_PER_BINDING, "{bytes}");
            assert!(is_dns1123_subdomain(&binding.name_any()));
            assert!(binding.name_any().starts_with("scim-analysts-view-"));
        }
        let names: BTreeSet<String> = desired
            .cluster_role_bindings
            .iter()
            .map(|b| b.name_any())
            .collect();
        assert_eq!(names.len(), 16);
    }

    #[test]
    fn one_member_more_or_less_changes_exactly_one_split_binding() {
        let (mut users, mut groups) = many_users(20_000);
        let policy = policy(vec![by_name("All")], vec![cluster_role("view", &[])]);
        let settings = ControllerSettings::default();
        let first = build_desired(&policy, &users, &groups, &settings);
        let current =
            CurrentAccess::from_bindings(&first.cluster_role_bindings, &first.role_bindings);
        users.push(user("u-new", "newcomer@example.com", true));
        groups[0].spec.members.push(GroupMember {
            value: "u-new".into(),
            ..GroupMember::default()
        });
        groups[0].spec.members.remove(0);

        let second = build_policy_access(
            &policy,
            &Snapshot::new(&users, &groups),
            &current,
            &settings,
        );

        let changed: Vec<String> = first
            .cluster_role_bindings
            .iter()
            .zip(&second.cluster_role_bindings)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.name_any())
            .collect();
        assert_eq!(
            second.cluster_role_bindings.len(),
            first.cluster_role_bindings.len()
        );
        assert!((1..=2).contains(&changed.len()), "{changed:?}");
        let subject_of = |name: &str| build_subject(USER_SUBJECT, name.into());
        let holding = |desired: &DesiredAccess, name: &str| {
            desired
                .cluster_role_bindings
                .iter()
                .filter(|b| {
                    b.subjects
                        .as_ref()
                        .is_some_and(|s| s.contains(&subject_of(name)))
                })
                .map(|b| b.name_any())
                .collect::<Vec<_>>()
        };
        let mut expected: Vec<String> = holding(&first, "user00000@example.com");
        expected.extend(holding(&second, "newcomer@example.com"));
        expected.sort();
        expected.dedup();
        assert_eq!(changed, expected);
    }

    #[test]
    fn the_split_count_grows_by_doubling_and_holds_near_a_boundary() {
        assert_eq!(compute_binding_count(0, None), 1);
        assert_eq!(compute_binding_count(4_000, None), 1);
        assert_eq!(compute_binding_count(4_001, None), 2);
        assert_eq!(compute_binding_count(50_000, None), 16);
        // Just below a boundary the existing split stays, until it is four times too large.
        assert_eq!(compute_binding_count(4_000, Some(2)), 2);
        assert_eq!(compute_binding_count(2_001, Some(2)), 2);
        assert_eq!(compute_binding_count(2_000, Some(2)), 1);
        assert_eq!(compute_binding_count(9_000, Some(2)), 4);
        assert_eq!(compute_binding_count(100, Some(3)), 1);
    }

    #[test]
    fn long_names_are_split_further_to_stay_within_the_byte_limit() {
        let long = "x".repeat(2_000);
        let users: Vec<ScimUser> = (0..1_000)
            .map(|i| user(&format!("u{i}"), &format!("{long}{i}"), true))
            .collect();
        let ids: Vec<String> = (0..1_000).map(|i| format!("u{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let groups = vec![group("g-all", "All", &ids)];
        let policy = policy(vec![by_name("All")], vec![cluster_role("view", &[])]);

        let desired = build_desired(&policy, &users, &groups, &ControllerSettings::default());

        assert!(desired.cluster_role_bindings.len() >= 2);
        for binding in &desired.cluster_role_bindings {
            let bytes = serde_json::to_vec(binding).unwrap().len();
            assert!(bytes <= MAX_SUBJECT_BYTES_PER_BINDING, "{bytes}");
        }
    }

    #[test]
    fn shard_names_never_equal_another_targets_name() {
        let target = |role: &str| Target {
            namespace: None,
            role_kind: RoleKind::Cluster,
            role: role.into(),
        };

        let shard = build_binding_name("p", &target("view"), 1, 2);
        let plain = build_binding_name("p", &target("view-1"), 0, 1);

        assert_ne!(shard, plain);
        assert_eq!(plain, "scim-p-view-1");
        assert!(shard.starts_with("scim-p-view-1-"));
    }

    fn sha_hex(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}
