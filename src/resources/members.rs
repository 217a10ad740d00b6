//! ScimGroupMembers: one shard of the member list of a large ScimGroup.
//!
//! An object in etcd holds at most about 1.5 MiB, and IdP groups with tens of thousands of
//! members exist. A group past a threshold keeps its members in shards instead of its own
//! spec: a member belongs to the shard its id hashes to, so adding or removing one member
//! rewrites one shard of a few hundred members, never the whole list.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GroupMember;

/// Part of the members of one ScimGroup.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "scim-operator.dev",
    version = "v1alpha1",
    kind = "ScimGroupMembers",
    plural = "scimgroupmembers",
    namespaced,
    shortname = "sgm",
    printcolumn = r#"{"name": "Group", "type": "string", "jsonPath": ".spec.groupId"}"#,
    printcolumn = r#"{"name": "Shard", "type": "integer", "jsonPath": ".spec.shard"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScimGroupMembersSpec {
    /// SCIM id of the group these members belong to.
    pub group_id: String,
    /// Index of this shard, below the group's `memberShards`.
    pub shard: i64,
    /// The members whose id hashes to this shard.
    #[serde(default)]
    pub members: Vec<GroupMember>,
}
