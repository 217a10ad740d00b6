//! AccessPolicy: which groups of a tenant receive which Kubernetes roles.
//!
//! Policies are cluster-scoped: a policy can grant ClusterRoles cluster-wide, so writing
//! one is a cluster administrator's act, not something a tenant namespace may do.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Maps groups of one tenant to Kubernetes roles.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "scim-operator.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    status = "AccessPolicyStatus",
    shortname = "ap",
    category = "scim",
    printcolumn = r#"{"name": "Tenant", "type": "string", "jsonPath": ".spec.tenant"}"#,
    printcolumn = r#"{"name": "Groups", "type": "integer", "jsonPath": ".status.groupCount"}"#,
    printcolumn = r#"{"name": "Subjects", "type": "integer", "jsonPath": ".status.subjectCount"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Namespace that holds the ScimUsers and ScimGroups of the IdP connection.
    pub tenant: String,
    /// The groups whose members receive the grants.
    pub groups: Vec<GroupSelector>,
    /// The roles granted.
    pub grants: Vec<Grant>,
    /// Whether subjects are the members as kind User, the group as kind Group, or both.
    #[serde(default)]
    pub subjects: SubjectKind,
    /// Privileges on data platform tables that the members of the groups receive, in the
    /// platform access configuration the operator renders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_grants: Vec<PlatformGrant>,
}

/// Selects one group by exactly one of its identifiers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupSelector {
    /// The group's displayName, compared without regard to case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The group's externalId, as the IdP knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The group's SCIM id, which survives renames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One role granted to the selected groups.
///
/// Exactly one of `clusterRole` and `role` is set. A `clusterRole` with neither `namespaces`
/// nor `namespaceSelector` is bound cluster-wide with a ClusterRoleBinding; otherwise it is
/// bound by a RoleBinding in each listed namespace and in each namespace the selector
/// matches. A `role` names a Role, which exists per namespace, so it needs one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// Name of a ClusterRole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_role: Option<String>,
    /// Name of a Role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Namespaces to bind in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Also bind in every namespace whose labels match, as they change: a namespace created
    /// or labelled later gets its binding, one that stops matching loses it. An empty
    /// selector matches every namespace, as everywhere in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Privileges on data platform tables, granted to the selected groups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformGrant {
    /// Tables as `catalog.schema.table`; each part is a lower-case name or `*` for any.
    #[schemars(
        length(min = 1),
        inner(regex(pattern = r"^(\*|[a-z0-9_-]+)\.(\*|[a-z0-9_-]+)\.(\*|[a-z0-9_-]+)$"))
    )]
    pub resources: Vec<String>,
    /// What the members may do with the tables.
    #[schemars(length(min = 1))]
    pub privileges: Vec<PlatformPrivilege>,
    /// Names of the platform targets that receive the grant; every target when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// A privilege on a table, named as in Trino's file-based access control.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlatformPrivilege {
    // Declared in alphabetical order, so that sorted lists read alphabetically.
    /// Delete rows.
    Delete,
    /// Let views the holder owns expose the table to others.
    GrantSelect,
    /// Insert rows.
    Insert,
    /// Create, drop, alter and comment on the table.
    Ownership,
    /// Read rows.
    Select,
    /// Update rows.
    Update,
}

/// The kind of RoleBinding subject a policy produces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    /// Each active member, as kind User named by userName.
    #[default]
    User,
    /// The group itself, as kind Group named by displayName.
    Group,
    /// Both of the above.
    Both,
}

/// Observed state of an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of selected groups that exist.
    #[serde(default)]
    pub group_count: i64,
    /// Number of distinct subjects granted.
    #[serde(default)]
    pub subject_count: i64,
    /// Number of bindings owned.
    #[serde(default)]
    pub binding_count: i64,
    /// Number of subjects the policy no longer grants that keep their bindings, because
    /// revoking them was held (see the Degraded condition).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_subject_count: i64,
    /// The groups the bindings were built from; a later pass tells a group that vanished
    /// from a member that left it by comparing with this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_groups: Vec<SelectedGroup>,
    /// Ready and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A group a policy selected, as it was then.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct SelectedGroup {
    /// The group's SCIM id.
    pub id: String,
    /// The group's displayName at the time.
    pub display_name: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
