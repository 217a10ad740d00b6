//! The platform access document: the operator's own versioned JSON format, from which any
//! data platform can learn its users, its groups and what each group may do.
//!
//! Version `scim-operator.dev/platform-access/v1`, one document per target:
//!
//! ```json
//! {
//!   "apiVersion": "scim-operator.dev/platform-access/v1",
//!   "kind": "PlatformAccess",
//!   "target": "analytics",
//!   "tenant": "idp-acme",
//!   "users": [
//!     {"userName": "ada@example.com", "active": true, "emails": ["ada@example.com"],
//!      "id": "2819c223", "tenant": "idp-acme"}
//!   ],
//!   "groups": [
//!     {"name": "Analysts", "members": ["ada@example.com"], "id": "e9e30dba", "tenant": "idp-acme"}
//!   ],
//!   "grants": [
//!     {"policy": "analysts", "tenant": "idp-acme", "groups": ["Analysts"],
//!      "users": ["ada@example.com"], "resources": ["analytics.*.*"], "privileges": ["SELECT"]}
//!   ]
//! }
//! ```
//!
//! Guarantees a reader may rely on:
//! - `users` lists every user of the tenants in scope, active or not; only active users
//!   appear in `groups[].members` and `grants[].users`, so a deactivated user holds nothing;
//! - a grant's `users` are the active members of its `groups`, resolved when the document
//!   was written; a platform that trusts its own group source can ignore them;
//! - every list is sorted and free of duplicates, and the text is written the same way
//!   for the same input, so a change shows as a small diff and a hash of the text changes
//!   exactly when the content does;
//! - a policy that is refused (a malformed grant or selector, a role outside the allow-list)
//!   contributes no grant at all;
//! - `tenant` is present only when the target is restricted to one tenant; the tenants in
//!   scope are then that one, and otherwise every tenant that some AccessPolicy names.
//!
//! New fields may be added within `v1`; a reader ignores what it does not know. Removing
//! or changing the meaning of a field takes a new version.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::PlatformTarget;
use crate::controller::{ControllerSettings, build_desired};
use crate::resources::{AccessPolicy, PlatformGrant, PlatformPrivilege, ScimGroup, ScimUser};

/// `apiVersion` of the document this module writes.
pub const PLATFORM_API_VERSION: &str = "scim-operator.dev/platform-access/v1";
/// `kind` of the document.
pub const PLATFORM_KIND: &str = "PlatformAccess";

/// The access configuration of one data platform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDocument {
    /// Always [`PLATFORM_API_VERSION`].
    pub api_version: String,
    /// Always [`PLATFORM_KIND`].
    pub kind: String,
    /// Name of the target the document was written for.
    pub target: String,
    /// The one tenant the target is restricted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Every user of the tenants in scope, sorted by userName, then tenant.
    pub users: Vec<PlatformUser>,
    /// Every group of the tenants in scope, sorted by name, then tenant.
    pub groups: Vec<PlatformGroup>,
    /// What the groups may do, sorted by policy, then content.
    pub grants: Vec<PlatformAccessGrant>,
}

/// One user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PlatformUser {
    /// The sign-in name, as the IdP sent it.
    pub user_name: String,
    /// Whether the user may hold access.
    pub active: bool,
    /// Email addresses, sorted.
    pub emails: Vec<String>,
    /// SCIM id, which survives renames.
    pub id: String,
    /// Namespace of the IdP connection the user came from.
    pub tenant: String,
}

/// One group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PlatformGroup {
    /// The group's displayName.
    pub name: String,
    /// userNames of the active members, sorted.
    pub members: Vec<String>,
    /// SCIM id, which survives renames.
    pub id: String,
    /// Namespace of the IdP connection the group came from.
    pub tenant: String,
}

/// Privileges on tables, granted by one entry of a policy's `platformGrants`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PlatformAccessGrant {
    /// Name of the AccessPolicy.
    pub policy: String,
    /// Tenant of the policy, which its groups belong to.
    pub tenant: String,
    /// Names of the selected groups that exist, sorted.
    pub groups: Vec<String>,
    /// userNames of the active members of those groups, sorted.
    pub users: Vec<String>,
    /// Table patterns as `catalog.schema.table`, `*` standing for any name; sorted.
    pub resources: Vec<String>,
    /// Privileges on the tables, sorted.
    pub privileges: Vec<PlatformPrivilege>,
}

/// A document together with what was left out of it and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformBuild {
    /// The document.
    pub document: PlatformDocument,
    /// Policies whose platform grants were left out, sorted by policy.
    pub problems: Vec<PlatformProblem>,
}

/// Why a policy's platform grants were left out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlatformProblem {
    /// An entry of `platformGrants` is malformed; the policy grants nothing on any platform.
    InvalidGrant {
        /// The policy.
        policy: String,
        /// Position of the entry in `platformGrants`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The policy is refused as a whole (see `build_desired`), so it grants nothing here.
    PolicyRefused {
        /// The policy.
        policy: String,
        /// The first reason it was refused for.
        reason: String,
    },
}

impl fmt::Display for PlatformProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformProblem::InvalidGrant {
                policy,
                index,
                reason,
            } => write!(f, "policy {policy}: platformGrants[{index}] {reason}"),
            PlatformProblem::PolicyRefused { policy, reason } => {
                write!(f, "policy {policy} grants nothing: {reason}")
            }
        }
    }
}

/// A table pattern: `catalog.schema.table`, where a part is a name or `*` for any name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourcePattern {
    /// The catalog, or `None` for any.
    pub catalog: Option<String>,
    /// The schema, or `None` for any.
    pub schema: Option<String>,
    /// The table, or `None` for any.
    pub table: Option<String>,
}

impl ResourcePattern {
    /// The three parts, catalog first.
    pub fn parts(&self) -> [Option<&str>; 3] {
        [
            self.catalog.as_deref(),
            self.schema.as_deref(),
            self.table.as_deref(),
        ]
    }

    /// Number of parts that name something rather than standing for any name.
    pub fn specificity(&self) -> usize {
        self.parts().iter().filter(|p| p.is_some()).count()
    }

    /// Whether every table this pattern matches is also matched by `outer`.
    pub fn is_within(&self, outer: &ResourcePattern) -> bool {
        self.parts()
            .iter()
            .zip(outer.parts())
            .all(|(inner, outer)| outer.is_none() || outer == *inner)
    }

    /// The tables both patterns match, as a pattern; `None` when there are none.
    pub fn intersect(&self, other: &ResourcePattern) -> Option<ResourcePattern> {
        let part = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (None, x) | (x, None) => Some(x.clone()),
            (Some(a), Some(b)) if a == b => Some(Some(a.clone())),
            _ => None,
        };
        Some(ResourcePattern {
            catalog: part(&self.catalog, &other.catalog)?,
            schema: part(&self.schema, &other.schema)?,
            table: part(&self.table, &other.table)?,
        })
    }
}

impl FromStr for ResourcePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "names {text:?}, which is not catalog.schema.table with each part a lower-case \
                 name or *"
            )
        };
        let parts: Vec<&str> = text.split('.').collect();
        let [catalog, schema, table] = parts.as_slice() else {
            return Err(invalid());
        };
        let part = |p: &str| match p {
            "*" => Ok(None),
            name if is_resource_name(name) => Ok(Some(name.to_string())),
            _ => Err(invalid()),
        };
        Ok(ResourcePattern {
            catalog: part(catalog)?,
            schema: part(schema)?,
            table: part(table)?,
        })
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [catalog, schema, table] = self.parts().map(|p| p.unwrap_or("*"));
        write!(f, "{catalog}.{schema}.{table}")
    }
}

/// Builds the document of `target` from every policy, user and group the operator sees.
///
/// Objects of tenants outside the target's scope are ignored, as are users and groups
/// without a namespace.
pub fn build_platform_document<P, U, G>(
    target: &PlatformTarget,
    policies: &[P],
    users: &[U],
    groups: &[G],
    settings: &ControllerSettings,
) -> PlatformBuild
where
    P: Borrow<AccessPolicy>,
    U: Borrow<ScimUser>,
    G: Borrow<ScimGroup>,
{
    // Scope: the target's tenant, or every tenant a policy names.
    let mut policies: Vec<&AccessPolicy> = policies
        .iter()
        .map(Borrow::borrow)
        .filter(|p| {
            let tenant = target.tenant.as_deref();
            tenant.is_none_or(|t| t == p.spec.tenant)
        })
        .collect();
    policies.sort_by_key(|p| p.name_any());
    let tenants: BTreeSet<&str> = match &target.tenant {
        Some(tenant) => BTreeSet::from([tenant.as_str()]),
        None => policies.iter().map(|p| p.spec.tenant.as_str()).collect(),
    };
    let directory = TenantDirectory::index(&tenants, users, groups);

    // Build: the directory, then the grants of every policy that is not refused.
    let mut problems = Vec::new();
    let mut grants = Vec::new();
    for policy in policies {
        grants.extend(build_policy_grants(
            target,
            policy,
            &directory,
            settings,
            &mut problems,
        ));
    }
    grants.sort();
    grants.dedup();
    problems.sort();
    PlatformBuild {
        document: PlatformDocument {
            api_version: PLATFORM_API_VERSION.to_string(),
            kind: PLATFORM_KIND.to_string(),
            target: target.name.clone(),
            tenant: target.tenant.clone(),
            users: directory.build_users(),
            groups: directory.build_groups(),
            grants,
        },
        problems,
    }
}

/// One user's privilege on one table pattern, and the policy that grants it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlatformAccess {
    /// The user's userName.
    pub user: String,
    /// The table pattern.
    pub resource: String,
    /// The privilege.
    pub privilege: PlatformPrivilege,
    /// The AccessPolicy.
    pub policy: String,
}

/// Every privilege the document grants, user by user.
pub fn build_platform_access(document: &PlatformDocument) -> BTreeSet<PlatformAccess> {
    let mut access = BTreeSet::new();
    for grant in &document.grants {
        for user in &grant.users {
            for resource in &grant.resources {
                for privilege in &grant.privileges {
                    access.insert(PlatformAccess {
                        user: user.clone(),
                        resource: resource.clone(),
                        privilege: *privilege,
                        policy: grant.policy.clone(),
                    });
                }
            }
        }
    }
    access
}

/// The name of `privilege`, as the document and Trino write it.
pub fn privilege_name(privilege: PlatformPrivilege) -> &'static str {
    match privilege {
        PlatformPrivilege::Delete => "DELETE",
        PlatformPrivilege::GrantSelect => "GRANT_SELECT",
        PlatformPrivilege::Insert => "INSERT",
        PlatformPrivilege::Ownership => "OWNERSHIP",
        PlatformPrivilege::Select => "SELECT",
        PlatformPrivilege::Update => "UPDATE",
    }
}

/// The document as pretty-printed JSON with a final newline.
pub fn build_platform_json(document: &PlatformDocument) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(document)?;
    text.push('\n');
    Ok(text)
}

/// Checks every entry of a policy's `platformGrants`, returning the valid entries with
/// sorted, distinct resources and privileges, or `None` and the problems when any entry is
/// malformed.
pub fn validate_platform_grants(
    policy: &AccessPolicy,
    problems: &mut Vec<PlatformProblem>,
) -> Option<Vec<ValidPlatformGrant>> {
    let name = policy.name_any();
    let mut valid = Vec::new();
    let mut failed = false;
    for (index, grant) in policy.spec.platform_grants.iter().enumerate() {
        match validate_platform_grant(grant) {
            Ok(grant) => valid.push(grant),
            Err(reason) => {
                failed = true;
                problems.push(PlatformProblem::InvalidGrant {
                    policy: name.clone(),
                    index,
                    reason,
                });
            }
        }
    }
    (!failed).then_some(valid)
}

/// An entry of `platformGrants` that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPlatformGrant {
    /// The table patterns, sorted and distinct.
    pub resources: Vec<ResourcePattern>,
    /// The privileges, sorted and distinct.
    pub privileges: Vec<PlatformPrivilege>,
    /// The targets named; every target when empty.
    pub targets: Vec<String>,
}

impl ValidPlatformGrant {
    /// Whether the grant applies to the target named `target`.
    pub fn applies_to(&self, target: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| t == target)
    }
}

fn validate_platform_grant(grant: &PlatformGrant) -> Result<ValidPlatformGrant, String> {
    if grant.resources.is_empty() {
        return Err("lists no resources".into());
    }
    if grant.privileges.is_empty() {
        return Err("lists no privileges".into());
    }
    let mut resources = grant
        .resources
        .iter()
        .map(|r| r.parse())
        .collect::<Result<Vec<ResourcePattern>, _>>()?;
    resources.sort();
    resources.dedup();
    let mut privileges = grant.privileges.clone();
    privileges.sort();
    privileges.dedup();
    Ok(ValidPlatformGrant {
        resources,
        privileges,
        targets: grant.targets.clone(),
    })
}

fn build_policy_grants(
    target: &PlatformTarget,
    policy: &AccessPolicy,
    directory: &TenantDirectory<'_>,
    settings: &ControllerSettings,
    problems: &mut Vec<PlatformProblem>,
) -> Vec<PlatformAccessGrant> {
    if policy.spec.platform_grants.is_empty() {
        return Vec::new();
    }

    // Validate: a malformed entry, or a policy refused as a whole, grants nothing.
    let Some(valid) = validate_platform_grants(policy, problems) else {
        return Vec::new();
    };
    let valid: Vec<_> = valid
        .into_iter()
        .filter(|g| g.applies_to(&target.name))
        .collect();
    if valid.is_empty() {
        return Vec::new();
    }
    let tenant = policy.spec.tenant.as_str();
    let (users, groups) = directory.tenant(tenant);
    let desired = build_desired(policy, users, groups, settings);
    if let Some(refusal) = desired.outcome.problems.iter().find(|p| p.blocks_policy()) {
        problems.push(PlatformProblem::PolicyRefused {
            policy: policy.name_any(),
            reason: refusal.to_string(),
        });
        return Vec::new();
    }

    // Resolve: the active members of the groups the policy selected.
    let selected: BTreeSet<&str> = desired.outcome.groups.iter().map(String::as_str).collect();
    let members: BTreeSet<String> = groups
        .iter()
        .filter(|g| selected.contains(g.spec.display_name.as_str()))
        .flat_map(|g| directory.active_members(tenant, g))
        .collect();
    valid
        .into_iter()
        .map(|grant| PlatformAccessGrant {
            policy: policy.name_any(),
            tenant: tenant.to_string(),
            groups: desired.outcome.groups.clone(),
            users: members.iter().cloned().collect(),
            resources: grant.resources.iter().map(ToString::to_string).collect(),
            privileges: grant.privileges,
        })
        .collect()
}

/// The users and groups of each tenant in scope.
struct TenantDirectory<'a> {
    tenants: BTreeMap<&'a str, Tenant<'a>>,
}

#[derive(Default)]
struct Tenant<'a> {
    users: Vec<&'a ScimUser>,
    groups: Vec<&'a ScimGroup>,
    /// Users by SCIM id; where two records share an id, an inactive one wins, so that a
    /// doubt never grants.
    by_id: HashMap<&'a str, &'a ScimUser>,
}

impl<'a> TenantDirectory<'a> {
    fn index<U: Borrow<ScimUser>, G: Borrow<ScimGroup>>(
        tenants: &BTreeSet<&'a str>,
        users: &'a [U],
        groups: &'a [G],
    ) -> Self {
        let mut index: BTreeMap<&str, Tenant<'_>> =
            tenants.iter().map(|t| (*t, Tenant::default())).collect();
        for user in users.iter().map(Borrow::borrow) {
            let Some(tenant) = user.metadata.namespace.as_deref() else {
                continue;
            };
            let Some(entry) = index.get_mut(tenant) else {
                continue;
            };
            entry.users.push(user);
            entry
                .by_id
                .entry(user.spec.id.as_str())
                .and_modify(|known| {
                    if !user.spec.is_active() {
                        *known = user;
                    }
                })
                .or_insert(user);
        }
        for group in groups.iter().map(Borrow::borrow) {
            let tenant = group.metadata.namespace.as_deref();
            if let Some(entry) = tenant.and_then(|t| index.get_mut(t)) {
                entry.groups.push(group);
            }
        }
        TenantDirectory { tenants: index }
    }

    fn tenant(&self, tenant: &str) -> (&[&'a ScimUser], &[&'a ScimGroup]) {
        match self.tenants.get(tenant) {
            Some(entry) => (&entry.users, &entry.groups),
            None => (&[], &[]),
        }
    }

    /// userNames of the active members of `group`.
    fn active_members(&self, tenant: &str, group: &ScimGroup) -> Vec<String> {
        let Some(entry) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        group
            .spec
            .members
            .iter()
            .filter_map(|m| entry.by_id.get(m.value.as_str()))
            .filter(|u| u.spec.is_active())
            .map(|u| u.spec.user_name.clone())
            .collect()
    }

    fn build_users(&self) -> Vec<PlatformUser> {
        let mut users: Vec<PlatformUser> = self
            .tenants
            .iter()
            .flat_map(|(tenant, entry)| {
                entry.users.iter().map(|user| {
                    let mut emails: Vec<String> = user
                        .spec
                        .emails
                        .iter()
                        .filter_map(|e| e.value.clone())
                        .collect();
                    emails.sort();
                    emails.dedup();
                    PlatformUser {
                        user_name: user.spec.user_name.clone(),
                        active: user.spec.is_active(),
                        emails,
                        id: user.spec.id.clone(),
                        tenant: tenant.to_string(),
                    }
                })
            })
            .collect();
        users.sort_by(|a, b| {
            (&a.user_name, &a.tenant, &a.id).cmp(&(&b.user_name, &b.tenant, &b.id))
        });
        users.dedup();
        users
    }

    fn build_groups(&self) -> Vec<PlatformGroup> {
        let mut groups: Vec<PlatformGroup> = self
            .tenants
            .iter()
            .flat_map(|(tenant, entry)| {
                entry.groups.iter().map(|group| {
                    let mut members = self.active_members(tenant, group);
                    members.sort();
                    members.dedup();
                    PlatformGroup {
                        name: group.spec.display_name.clone(),
                        members,
                        id: group.spec.id.clone(),
                        tenant: tenant.to_string(),
                    }
                })
            })
            .collect();
        groups.sort_by(|a, b| (&a.name, &a.tenant, &a.id).cmp(&(&b.name, &b.tenant, &b.id)));
        groups.dedup();
        groups
    }
}

/// Whether `name` may be a literal part of a resource pattern: lower-case letters, digits,
/// `_` and `-`, as Trino stores unquoted names.
fn is_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
pub(crate) mod tests {
    use super::*;
    use crate::platform::{ObjectKind, PlatformFormat};
    use crate::resources::{
        AccessPolicySpec, Grant, GroupMember, GroupSelector, MultiValued, ScimGroupSpec,
        ScimUserSpec,
    };

    pub(crate) const TENANT: &str = "idp-acme";

    pub(crate) fn user(id: &str, user_name: &str, active: bool) -> ScimUser {
        let mut user = ScimUser::new(
            &user_name.replace('@', "-"),
            ScimUserSpec {
                id: id.into(),
                user_name: user_name.into(),
                active: Some(active),
                emails: vec![MultiValued {
                    value: Some(user_name.into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        user.metadata.namespace = Some(TENANT.into());
        user
    }

    pub(crate) fn group(id: &str, name: &str, members: &[&str]) -> ScimGroup {
        let mut group = ScimGroup::new(
            &name.to_lowercase(),
            ScimGroupSpec {
                id: id.into(),
                display_name: name.into(),
                members: members
                    .iter()
                    .map(|m| GroupMember {
                        value: m.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        );
        group.metadata.namespace = Some(TENANT.into());
        group
    }

    pub(crate) fn policy(name: &str, groups: &[&str], grants: Vec<PlatformGrant>) -> AccessPolicy {
        AccessPolicy::new(
            name,
            AccessPolicySpec {
                tenant: TENANT.into(),
                groups: groups
                    .iter()
                    .map(|g| GroupSelector {
                        display_name: Some(g.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                grants: vec![],
                subjects: Default::default(),
                platform_grants: grants,
            },
        )
    }

    pub(crate) fn grant(resources: &[&str], privileges: &[PlatformPrivilege]) -> PlatformGrant {
        PlatformGrant {
            resources: resources.iter().map(|r| r.to_string()).collect(),
            privileges: privileges.to_vec(),
            targets: vec![],
        }
    }

    pub(crate) fn target(name: &str, tenant: Option<&str>) -> PlatformTarget {
        PlatformTarget {
            name: name.into(),
            format: PlatformFormat::Json,
            kind: ObjectKind::ConfigMap,
            namespace: "trino".into(),
            object: "platform-access".into(),
            tenant: tenant.map(Into::into),
        }
    }

    /// ada and bob analyse, carol engineers, dave is inactive, erin is in no group.
    pub(crate) fn directory() -> (Vec<ScimUser>, Vec<ScimGroup>) {
        let users = vec![
            user("u-bob", "bob@example.com", true),
            user("u-ada", "ada@example.com", true),
            user("u-carol", "carol@example.com", true),
            user("u-dave", "dave@example.com", false),
            user("u-erin", "erin@example.com", true),
        ];
        let groups = vec![
            group("g-an", "Analysts", &["u-bob", "u-ada", "u-dave", "u-gone"]),
            group("g-en", "Engineers", &["u-carol", "u-ada"]),
        ];
        (users, groups)
    }

    use PlatformPrivilege::{Insert, Select};

    #[test]
    fn the_document_lists_users_groups_with_active_members_and_resolved_grants() {
        let (users, groups) = directory();
        let policies = vec![
            policy(
                "engineers",
                &["engineers"],
                vec![grant(&["analytics.raw.*"], &[Select, Insert, Select])],
            ),
            policy(
                "analysts",
                &["Analysts"],
                vec![grant(
                    &["analytics.*.*", "analytics.*.*", "sales.public.orders"],
                    &[Select],
                )],
            ),
        ];

        let build = build_platform_document(
            &target("analytics", None),
            &policies,
            &users,
            &groups,
            &ControllerSettings::default(),
        );

        let person = |name: &str, id: &str, active: bool| PlatformUser {
            user_name: name.into(),
            active,
            emails: vec![name.into()],
            id: id.into(),
            tenant: TENANT.into(),
        };
        assert_eq!(
            build,
            PlatformBuild {
                document: PlatformDocument {
                    api_version: PLATFORM_API_VERSION.into(),
                    kind: PLATFORM_KIND.into(),
                    target: "analytics".into(),
                    tenant: None,
                    users: vec![
                        person("ada@example.com", "u-ada", true),
                        person("bob@example.com", "u-bob", true),
                        person("carol@example.com", "u-carol", true),
                        person("dave@example.com", "u-dave", false),
                        person("erin@example.com", "u-erin", true),
                    ],
                    groups: vec![
                        PlatformGroup {
                            name: "Analysts".into(),
                            members: vec!["ada@example.com".into(), "bob@example.com".into()],
                            id: "g-an".into(),
                            tenant: TENANT.into(),
                        },
                        PlatformGroup {
                            name: "Engineers".into(),
                            members: vec!["ada@example.com".into(), "carol@example.com".into()],
                            id: "g-en".into(),
                            tenant: TENANT.into(),
                        },
                    ],
                    grants: vec![
                        PlatformAccessGrant {
                            policy: "analysts".into(),
                            tenant: TENANT.into(),
                            groups: vec!["Analysts".into()],
                            users: vec!["ada@example.com".into(), "bob@example.com".into()],
                            resources: vec!["analytics.*.*".into(), "sales.public.orders".into()],
                            privileges: vec![Select],
                        },
                        PlatformAccessGrant {
                            policy: "engineers".into(),
                            tenant: TENANT.into(),
                            groups: vec!["Engineers".into()],
                            users: vec!["ada@example.com".into(), "carol@example.com".into()],
                            resources: vec!["analytics.raw.*".into()],
                            privileges: vec![Insert, Select],
                        },
                    ],
                },
                problems: vec![],
            }
        );
    }

    #[test]
    fn the_json_text_is_stable_and_camel_cased() {
        let users = vec![user("u-ada", "ada@example.com", true)];
        let groups = vec![group("g-an", "Analysts", &["u-ada"])];
        let policies = vec![policy(
            "analysts",
            &["Analysts"],
            vec![grant(&["analytics.*.*"], &[Select])],
        )];

        let build = build_platform_document(
            &target("analytics", Some(TENANT)),
            &policies,
            &users,
            &groups,
            &ControllerSettings::default(),
        );

        assert_eq!(
            build_platform_json(&build.document).unwrap(),
            r#"{
  "apiVersion": "scim-operator.dev/platform-access/v1",
  "kind": "PlatformAccess",
  "target": "analytics",
  "tenant": "idp-acme",
  "users": [
    {
      "userName": "ada@example.com",
      "active": true,
      "emails": [
        "ada@example.com"
      ],
      "id": "u-ada",
      "tenant": "idp-acme"
    }
  ],
  "groups": [
    {
      "name": "Analysts",
      "members": [
        "ada@example.com"
      ],
      "id": "g-an",
      "tenant": "idp-acme"
    }
  ],
  "grants": [
    {
      "policy": "analysts",
      "tenant": "idp-acme",
      "groups": [
        "Analysts"
      ],
      "users": [
        "ada@example.com"
      ],
      "resources": [
        "analytics.*.*"
      ],
      "privileges": [
        "SELECT"
      ]
    }
  ]
}
"#
        );
    }

    #[test]
    fn a_malformed_platform_grant_or_a_refused_policy_grants_nothing_on_the_platform() {
        let (users, groups) = directory();
        let mut refused = policy(
            "refused",
            &["Analysts"],
            vec![grant(&["analytics.*.*"], &[Select])],
        );
        refused.spec.grants = vec![Grant {
            cluster_role: Some("cluster-admin".into()),
            ..Default::default()
        }];
        let policies = vec![
            policy(
                "malformed",
                &["Analysts"],
                vec![
                    grant(&["analytics.*.*"], &[Select]),
                    grant(&["Analytics.x"], &[Select]),
                    grant(&["analytics.*.*"], &[]),
                ],
            ),
            refused,
        ];
        let settings = ControllerSettings {
            allowed_roles: Some(vec!["ClusterRole/view".into()]),
            ..Default::default()
        };

        let build = build_platform_document(
            &target("analytics", None),
            &policies,
            &users,
            &groups,
            &settings,
        );

        assert_eq!(build.document.grants, vec![]);
        assert_eq!(
            build.problems,
            vec![
                PlatformProblem::InvalidGrant {
                    policy: "malformed".into(),
                    index: 1,
                    reason: "names \"Analytics.x\", which is not catalog.schema.table with each \
                             part a lower-case name or *"
                        .into(),
                },
                PlatformProblem::InvalidGrant {
                    policy: "malformed".into(),
                    index: 2,
                    reason: "lists no privileges".into(),
                },
                PlatformProblem::PolicyRefused {
                    policy: "refused".into(),
                    reason: "ClusterRole \"cluster-admin\" is not in the allowed roles".into(),
                },
            ]
        );
    }

    #[test]
    fn grants_reach_only_the_targets_they_name_and_targets_see_only_their_tenant() {
        let (users, groups) = directory();
        let mut only_b = grant(&["b.*.*"], &[Select]);
        only_b.targets = vec!["b".into()];
        let mut foreign = policy("foreign", &["Analysts"], vec![grant(&["x.*.*"], &[Select])]);
        foreign.spec.tenant = "other".into();
        let policies = vec![
            policy(
                "p",
                &["Analysts"],
                vec![grant(&["all.*.*"], &[Select]), only_b],
            ),
            foreign,
        ];
        let build = |t: PlatformTarget| {
            let doc = build_platform_document(
                &t,
                &policies,
                &users,
                &groups,
                &ControllerSettings::default(),
            )
            .document;
            let resources: Vec<String> = doc.grants.into_iter().flat_map(|g| g.resources).collect();
            (resources, doc.users.len())
        };

        assert_eq!(
            build(target("a", Some(TENANT))),
            (vec!["all.*.*".into()], 5)
        );
        assert_eq!(
            build(target("b", Some(TENANT))),
            (vec!["all.*.*".into(), "b.*.*".into()], 5)
        );
        assert_eq!(build(target("a", Some("other"))), (vec!["x.*.*".into()], 0));
        assert_eq!(
            build(target("a", None)),
            (vec!["x.*.*".into(), "all.*.*".into()], 5),
            "a grant whose groups do not exist is listed and reaches no one"
        );
    }

    #[test]
    fn a_user_whose_id_also_has_an_inactive_record_holds_no_platform_grant() {
        let (mut users, groups) = directory();
        let mut twin = user("u-ada", "ada2@example.com", false);
        twin.metadata.name = Some("ada2".into());
        users.push(twin);
        let policies = vec![policy(
            "p",
            &["Engineers"],
            vec![grant(&["a.*.*"], &[Select])],
        )];

        let doc = build_platform_document(
            &target("a", None),
            &policies,
            &users,
            &groups,
            &ControllerSettings::default(),
        )
        .document;

        assert_eq!(doc.grants[0].users, vec!["carol@example.com".to_string()]);
    }

    #[test]
    fn privilege_names_are_the_serialized_names() {
        use PlatformPrivilege::*;
        for privilege in [Delete, GrantSelect, Insert, Ownership, Select, Update] {
            assert_eq!(
                serde_json::to_value(privilege).unwrap(),
                serde_json::Value::from(privilege_name(privilege))
            );
        }
    }

    #[test]
    fn resource_patterns_nest_and_intersect_part_by_part() {
        let p = |s: &str| s.parse::<ResourcePattern>().unwrap();

        assert!(p("a.s.t").is_within(&p("a.*.*")));
        assert!(!p("a.*.*").is_within(&p("a.s.t")));
        assert_eq!(p("a.*.t").intersect(&p("*.s.*")), Some(p("a.s.t")));
        assert_eq!(p("a.*.*").intersect(&p("b.*.*")), None);
        assert_eq!(p("*.*.*").specificity(), 0);
        assert_eq!(p("a.*.t").to_string(), "a.*.t");
        assert!("a.b".parse::<ResourcePattern>().is_err());
        assert!("a.b.c.d".parse::<ResourcePattern>().is_err());
        assert!("a.b%.c".parse::<ResourcePattern>().is_err());
        assert!("a..c".parse::<ResourcePattern>().is_err());
    }
}
