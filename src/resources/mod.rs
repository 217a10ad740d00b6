//! The custom resources: ScimUser and ScimGroup (the durable record of what the IdP sent)
//! and AccessPolicy (what access those identities get).

mod group;
mod members;
mod policy;
mod user;

pub use group::{GroupMember, ScimGroup, ScimGroupSpec, ScimGroupStatus};
pub use members::{ScimGroupMembers, ScimGroupMembersSpec};
pub use policy::{
    AccessPolicy, AccessPolicySpec, AccessPolicyStatus, Grant, GroupSelector, PlatformGrant,
    PlatformPrivilege, SelectedGroup, SubjectKind,
};
pub use user::{
    Address, EnterpriseUser, Manager, MultiValued, Name, ScimUser, ScimUserSpec, ScimUserStatus,
};

use kube::{CustomResourceExt, Resource};

/// API group of every resource this operator defines.
pub const API_GROUP: &str = "scim-operator.dev";
/// Annotation holding a resource's SCIM `meta.created` (it survives renames, which move
/// the object to a new name).
pub const CREATED_ANNOTATION: &str = "scim-operator.dev/created";
/// Annotation holding a resource's SCIM `meta.lastModified`.
pub const LAST_MODIFIED_ANNOTATION: &str = "scim-operator.dev/last-modified";
/// Label carrying the SCIM id, so that `kubectl get -l` finds a resource by id.
pub const ID_LABEL: &str = "scim-operator.dev/id";
/// Label marking objects this operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "scim-operator";

/// The CRDs of all resources, as one multi-document YAML stream in a stable order.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let crds = [
        ScimUser::crd(),
        ScimGroup::crd(),
        ScimGroupMembers::crd(),
        AccessPolicy::crd(),
    ];
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// The kind of a resource type, for messages.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}
