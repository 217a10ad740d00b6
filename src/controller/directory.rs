//! The inputs of a pass as the caches hold them at one moment ([`Snapshot`]), and the view
//! of one tenant that policies are resolved against: users by id, and groups with their
//! members, including those kept in member shards.
//!
//! A group that keeps its members in shards is complete only when every shard is present;
//! a pass must not read the members of a missing shard as "no longer members".

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Resource, ResourceExt};

use crate::resources::{GroupMember, ScimGroup, ScimGroupMembers, ScimUser};

/// Users, groups, member shards and namespaces, as one pass sees them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot<'a> {
    /// Users of any tenant.
    pub users: Vec<&'a ScimUser>,
    /// Groups of any tenant.
    pub groups: Vec<&'a ScimGroup>,
    /// Member shards of large groups, of any tenant.
    pub member_shards: Vec<&'a ScimGroupMembers>,
    /// The cluster's namespaces; `None` where namespaces are not known (the local mode), so
    /// that selectors match nothing and no binding counts as gone with its namespace.
    pub namespaces: Option<Vec<&'a Namespace>>,
}

impl<'a> Snapshot<'a> {
    /// A snapshot of users and groups, without member shards and without namespaces.
    pub fn new<U, G>(users: &'a [U], groups: &'a [G]) -> Self
    where
        U: Borrow<ScimUser>,
        G: Borrow<ScimGroup>,
    {
        Self {
            users: users.iter().map(Borrow::borrow).collect(),
            groups: groups.iter().map(Borrow::borrow).collect(),
            member_shards: Vec::new(),
            namespaces: None,
        }
    }

    /// The same snapshot with the member shards of large groups.
    pub fn with_member_shards<M: Borrow<ScimGroupMembers>>(mut self, shards: &'a [M]) -> Self {
        self.member_shards = shards.iter().map(Borrow::borrow).collect();
        self
    }

    /// The same snapshot with the cluster's namespaces.
    pub fn with_namespaces<N: Borrow<Namespace>>(mut self, namespaces: &'a [N]) -> Self {
        self.namespaces = Some(namespaces.iter().map(Borrow::borrow).collect());
        self
    }

    /// The namespaces that can hold new bindings, with their labels: those that exist and
    /// are not being deleted. Empty where namespaces are not known.
    pub(crate) fn live_namespaces(&self) -> BTreeMap<&'a str, &'a BTreeMap<String, String>> {
        self.namespaces
            .iter()
            .flatten()
            .filter(|ns| is_live(ns))
            .filter_map(|ns| Some((ns.metadata.name.as_deref()?, ns.labels())))
            .collect()
    }

    /// Whether a binding in `namespace` can still exist: false only when namespaces are known
    /// and this one is gone or being deleted, which removes its bindings on its own.
    pub(crate) fn is_namespace_live(&self, namespace: &str) -> bool {
        let Some(namespaces) = &self.namespaces else {
            return true;
        };
        namespaces
            .iter()
            .any(|ns| ns.metadata.name.as_deref() == Some(namespace) && is_live(ns))
    }
}

fn is_live(namespace: &Namespace) -> bool {
    let terminating =
        namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    namespace.metadata.deletion_timestamp.is_none() && !terminating
}

/// The users and groups of one tenant, resolved.
pub(crate) struct TenantView<'a> {
    /// Users by SCIM id. Two records with one id should not exist; if they do, an inactive
    /// one wins, so that a doubt never grants.
    pub users_by_id: HashMap<&'a str, &'a ScimUser>,
    /// SCIM ids of the tenant's groups, which count as resolved members.
    pub group_ids: HashSet<&'a str>,
    /// Every group of the tenant, in snapshot order.
    pub groups: Vec<GroupView<'a>>,
}

/// One group with its members.
pub(crate) struct GroupView<'a> {
    /// The group object.
    pub group: &'a ScimGroup,
    /// Its members, from the object or from its shards.
    pub members: Vec<&'a GroupMember>,
    /// False when the group keeps its members in shards and one of them is missing.
    pub complete: bool,
}

impl<'a> TenantView<'a> {
    /// Resolves the objects of `tenant` in `snapshot` (objects without a namespace, as in the
    /// local mode, belong to every tenant).
    pub fn build(snapshot: &Snapshot<'a>, tenant: &str) -> Self {
        let mut users_by_id: HashMap<&str, &ScimUser> = HashMap::new();
        for user in snapshot.users.iter().filter(|u| is_in_tenant(**u, tenant)) {
            users_by_id
                .entry(user.spec.id.as_str())
                .and_modify(|known| {
                    if !user.spec.is_active() {
                        *known = user;
                    }
                })
                .or_insert(user);
        }
        let mut shards: HashMap<&str, Vec<&ScimGroupMembers>> = HashMap::new();
        for shard in snapshot
            .member_shards
            .iter()
            .filter(|s| is_in_tenant(**s, tenant))
        {
            shards
                .entry(shard.spec.group_id.as_str())
                .or_default()
                .push(shard);
        }
        let groups: Vec<GroupView> = snapshot
            .groups
            .iter()
            .filter(|g| is_in_tenant(**g, tenant))
            .map(|group| build_group_view(group, shards.get(group.spec.id.as_str())))
            .collect();
        let group_ids = groups.iter().map(|g| g.group.spec.id.as_str()).collect();
        Self {
            users_by_id,
            group_ids,
            groups,
        }
    }

    /// Whether `member` names a user or a group of the tenant.
    pub fn resolves(&self, member: &str) -> bool {
        self.users_by_id.contains_key(member) || self.group_ids.contains(member)
    }
}

fn build_group_view<'a>(
    group: &'a ScimGroup,
    shards: Option<&Vec<&'a ScimGroupMembers>>,
) -> GroupView<'a> {
    let Some(count) = group.spec.member_shards else {
        return GroupView {
            group,
            members: group.spec.members.iter().collect(),
            complete: true,
        };
    };
    let count = count.max(0);
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    for shard in shards.into_iter().flatten() {
        if (0..count).contains(&shard.spec.shard) && seen.insert(shard.spec.shard) {
            members.extend(shard.spec.members.iter());
        }
    }
    GroupView {
        group,
        members,
        complete: i64::try_from(seen.len()).is_ok_and(|n| n == count),
    }
}

pub(crate) fn is_in_tenant<K: Resource>(object: &K, tenant: &str) -> bool {
    object
        .meta()
        .namespace
        .as_deref()
        .is_none_or(|ns| ns == tenant)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::resources::{ScimGroupMembersSpec, ScimGroupSpec};
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn member(id: &str) -> GroupMember {
        GroupMember {
            value: id.into(),
            ..Default::default()
        }
    }

    fn sharded_group(shards: i64) -> ScimGroup {
        let mut group = ScimGroup::new(
            "big",
            ScimGroupSpec {
                id: "g-big".into(),
                display_name: "Big".into(),
                member_shards: Some(shards),
                ..Default::default()
            },
        );
        group.metadata.namespace = Some("acme".into());
        group
    }

    fn shard(index: i64, members: &[&str]) -> ScimGroupMembers {
        let mut shard = ScimGroupMembers::new(
            &format!("gm-g-big-{index}"),
            ScimGroupMembersSpec {
                group_id: "g-big".into(),
                shard: index,
                members: members.iter().map(|m| member(m)).collect(),
            },
        );
        shard.metadata.namespace = Some("acme".into());
        shard
    }

    #[test]
    fn a_sharded_group_collects_its_members_and_is_complete_only_with_every_shard() {
        let groups = [sharded_group(2)];
        let mut foreign = shard(1, &["u-x"]);
        foreign.metadata.namespace = Some("other".into());
        let all = [
            shard(0, &["u1"]),
            shard(1, &["u2", "u3"]),
            shard(2, &["u-stale"]),
        ];
        let partial = [shard(0, &["u1"]), foreign];
        let no_users: [ScimUser; 0] = [];

        let full = Snapshot::new(&no_users, &groups).with_member_shards(&all);
        let missing = Snapshot::new(&no_users, &groups).with_member_shards(&partial);
        let full = TenantView::build(&full, "acme");
        let missing = TenantView::build(&missing, "acme");

        let ids = |view: &TenantView| -> Vec<String> {
            view.groups[0]
                .members
                .iter()
                .map(|m| m.value.clone())
                .collect()
        };
        assert_eq!(
            (ids(&full), full.groups[0].complete),
            (vec!["u1".into(), "u2".into(), "u3".into()], true)
        );
        assert_eq!(
            (ids(&missing), missing.groups[0].complete),
            (vec!["u1".into()], false)
        );
    }

    #[test]
    fn namespaces_being_deleted_are_not_live_and_unknown_namespaces_count_as_live() {
        let mut terminating = Namespace::default();
        terminating.metadata.name = Some("going".into());
        terminating.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        let mut deleted = Namespace::default();
        deleted.metadata.name = Some("deleted".into());
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut live = Namespace::default();
        live.metadata.name = Some("here".into());
        let namespaces = [terminating, deleted, live];
        let none: [ScimUser; 0] = [];
        let no_groups: [ScimGroup; 0] = [];

        let known = Snapshot::new(&none, &no_groups).with_namespaces(&namespaces);
        let unknown = Snapshot::new(&none, &no_groups);

        assert_eq!(
            known.live_namespaces().keys().copied().collect::<Vec<_>>(),
            vec!["here"]
        );
        assert_eq!(
            ["going", "deleted", "here", "absent"].map(|n| known.is_namespace_live(n)),
            [false, false, true, false]
        );
        assert!(unknown.is_namespace_live("absent"));
        assert!(unknown.live_namespaces().is_empty());
    }
}
