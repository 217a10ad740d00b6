//! ScimGroup: one SCIM Group (RFC 7643 §4.2) of one tenant, with its members.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A group provisioned by an identity provider.
///
/// The object name is derived from the lower-cased `displayName`, so the API server refuses
/// a second group with the same name; `id` is the SCIM id, which survives renames.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "scim-operator.dev",
    version = "v1alpha1",
    kind = "ScimGroup",
    namespaced,
    status = "ScimGroupStatus",
    shortname = "sg",
    category = "scim",
    printcolumn = r#"{"name": "DisplayName", "type": "string", "jsonPath": ".spec.displayName"}"#,
    printcolumn = r#"{"name": "Members", "type": "integer", "jsonPath": ".status.memberCount"}"#,
    printcolumn = r#"{"name": "Id", "type": "string", "jsonPath": ".spec.id", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScimGroupSpec {
    /// SCIM id assigned by this server; stable across renames.
    pub id: String,
    /// Human-readable name, unique within the tenant regardless of case.
    pub display_name: String,
    /// Identifier of the group in the identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Members, by SCIM id. Empty when the members are kept in shards (`memberShards`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<GroupMember>,
    /// When set, the members are kept in this many ScimGroupMembers objects (named
    /// `gm-<id>-<shard>`) instead of `members`, so that large groups fit and one change
    /// rewrites one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_shards: Option<i64>,
}

/// One member of a group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// SCIM id of the member.
    pub value: String,
    /// Display name of the member, as the IdP sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// `User` or `Group`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Observed state of a ScimGroup, kept by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimGroupStatus {
    /// Number of members.
    #[serde(default)]
    pub member_count: i64,
    /// Number of members that are active users.
    #[serde(default)]
    pub active_member_count: i64,
    /// Member ids that name no user of this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved_members: Vec<String>,
}
