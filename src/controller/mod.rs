//! The controller: turns AccessPolicies and the directory they name into RoleBindings and
//! ClusterRoleBindings, in a cluster ([`kube`]) or in a local folder ([`local`]).
//!
//! What a policy grants is a pure function of the policy, the tenant's users and groups, the
//! namespaces, the bindings that exist and the [`ControllerSettings`] ([`desired`],
//! [`revocation`], [`status`], [`audit`]); the two drivers only fetch inputs and write outputs.

pub mod audit;
pub mod desired;
pub mod directory;
pub mod kube;
pub mod local;
pub mod revocation;
pub mod selector;
pub mod status;

pub use desired::{
    CurrentAccess, DesiredAccess, PolicyOutcome, Problem, SubjectKey, Target, build_desired,
    build_policy_access,
};
pub use directory::Snapshot;
pub use revocation::{Cause, Hold, HoldReason};
pub use status::{IdentityStatuses, build_identity_statuses, build_policy_status};

use crate::resources::{ScimGroup, ScimUser};

/// Label naming the AccessPolicy that created a binding; pruning selects by it.
pub const POLICY_LABEL: &str = "scim-operator.dev/policy";

/// Annotation on an AccessPolicy that releases held revocations: `"true"` turns the guard
/// off for the policy, and the fingerprint a held pass reports releases exactly that hold.
/// See [`revocation`].
pub const ALLOW_MASS_REVOCATION_ANNOTATION: &str = "scim-operator.dev/allow-mass-revocation";

/// Share of a policy's subjects that one pass may revoke without an explicit reason before
/// it holds, unless configured otherwise.
pub const DEFAULT_MAX_REVOCATION_RATIO: f64 = 0.5;

/// How the controller names subjects, which roles policies may grant, and how much access a
/// pass may take away at once.
#[derive(Clone, Debug, PartialEq)]
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
    /// Largest share (0 to 1) of a policy's bound subjects that one pass may revoke without
    /// an explicit reason in the directory; a pass that would revoke more holds those
    /// revocations. `None` turns this guard off. See [`revocation`].
    pub max_revocation_ratio: Option<f64>,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            user_prefix: String::new(),
            group_prefix: String::new(),
            allowed_roles: None,
            max_revocation_ratio: Some(DEFAULT_MAX_REVOCATION_RATIO),
        }
    }
}

/// Read access to the users and groups of each tenant, for the local mode.
pub trait Directory: Send + Sync {
    /// Every user of `tenant`, active or not.
    fn users(&self, tenant: &str) -> Vec<ScimUser>;
    /// Every group of `tenant`, with its members.
    fn groups(&self, tenant: &str) -> Vec<ScimGroup>;
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
