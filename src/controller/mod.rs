//! The controller: turns AccessPolicies and the directory they name into RoleBindings and
//! ClusterRoleBindings, in a cluster ([`kube`]) or in a local folder ([`local`]).
//!
//! What a policy grants is a pure function of the policy, the tenant's users and groups and
//! the [`ControllerSettings`] ([`desired`], [`status`]); the two drivers only fetch inputs and
//! write outputs.

pub mod desired;
pub mod kube;
pub mod local;
pub mod status;

pub use desired::{DesiredAccess, PolicyOutcome, Problem, build_desired};
pub use status::{IdentityStatuses, build_identity_statuses, build_policy_status};

use crate::resources::{ScimGroup, ScimUser};

/// Label naming the AccessPolicy that created a binding; pruning selects by it.
pub const POLICY_LABEL: &str = "scim-operator.dev/policy";

/// How the controller names subjects and which roles policies may grant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerSettings {
    /// Prepended to a userName to form a subject of kind User; set it to the cluster's OIDC
    /// username prefix (for example `oidc:`) so that subjects match authenticated users.
    pub user_prefix: String,
    /// Prepended to a group's displayName to form a subject of kind Group; set it to the
    /// cluster's OIDC groups prefix.
    pub group_prefix: String,
    /// Roles that policies may grant; `None` allows every role.
    ///
    /// An entry is `ClusterRole/<name>` (matches `clusterRole` grants), `Role/<name>`
    /// (matches `role` grants) or a bare `<name>` (matches either kind). Names compare
    /// exactly, as Kubernetes compares them. A policy naming any role outside the list
    /// grants nothing at all.
    pub allowed_roles: Option<Vec<String>>,
}

/// Read access to the users and groups of each tenant, for the local mode.
pub trait Directory: Send + Sync {
    /// Every user of `tenant`, active or not.
    fn users(&self, tenant: &str) -> Vec<ScimUser>;
    /// Every group of `tenant`.
    fn groups(&self, tenant: &str) -> Vec<ScimGroup>;
}

/// Logs each subject that gains or loses a binding, as the audit trail of access changes.
pub(crate) fn log_access_changes(
    policy: &str,
    binding: &str,
    namespace: Option<&str>,
    before: &[k8s_openapi::api::rbac::v1::Subject],
    after: &[k8s_openapi::api::rbac::v1::Subject],
) {
    let namespace = namespace.unwrap_or_default();
    for subject in after.iter().filter(|s| !before.contains(s)) {
        tracing::info!(
            policy,
            binding,
            namespace,
            kind = %subject.kind,
            subject = %subject.name,
            "access granted"
        );
    }
    for subject in before.iter().filter(|s| !after.contains(s)) {
        tracing::info!(
            policy,
            binding,
            namespace,
            kind = %subject.kind,
            subject = %subject.name,
            "access revoked"
        );
    }
}

/// The message of `error` followed by those of its sources, for one-line logs and statuses.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
