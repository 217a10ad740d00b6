//! Member shards of large groups: where each member goes, and the cache of shards that
//! turns a group object and its shards back into one member list.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::resources::{GroupMember, ScimGroup, ScimGroupMembers};

/// Groups with more members than this keep them in shards.
pub const INLINE_MEMBER_LIMIT: usize = 1000;
/// Members per shard the layout aims for; a shard holds a few tens of KiB.
pub const TARGET_SHARD_SIZE: usize = 500;
/// Label carrying the group id on shards.
pub const GROUP_ID_LABEL: &str = "scim-operator.dev/group-id";

/// The number of shards for a member count, keeping the current one while it stays within
/// a factor of four of the target so that growth does not reshuffle on every write.
pub fn compute_shard_count(members: usize, current: Option<i64>) -> Option<i64> {
    if members <= INLINE_MEMBER_LIMIT {
        return None;
    }
    if let Some(n) = current.filter(|n| *n > 0) {
        let average = members / n as usize;
        if (TARGET_SHARD_SIZE / 4..=TARGET_SHARD_SIZE * 4).contains(&average) {
            return Some(n);
        }
    }
    let wanted = members.div_ceil(TARGET_SHARD_SIZE).next_power_of_two();
    Some(wanted as i64)
}

/// The shard a member belongs to.
pub fn compute_shard_of(member_id: &str, count: i64) -> i64 {
    let digest = Sha256::digest(member_id.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    i64::from(n) % count.max(1)
}

/// The object name of a shard.
pub fn shard_name(group_id: &str, shard: i64) -> String {
    format!("gm-{group_id}-{shard}")
}

/// Members grouped by the shard they belong to (every shard index present).
pub fn build_layout(members: &[GroupMember], count: i64) -> BTreeMap<i64, Vec<GroupMember>> {
    let mut layout: BTreeMap<i64, Vec<GroupMember>> = (0..count).map(|i| (i, Vec::new())).collect();
    for member in members {
        layout
            .entry(compute_shard_of(&member.value, count))
            .or_default()
            .push(member.clone());
    }
    layout
}

/// Per shard: the members to add and the member ids to remove, going from `before` to
/// `after` (both under the same shard count).
pub fn build_deltas(
    before: &[GroupMember],
    after: &[GroupMember],
    count: i64,
) -> BTreeMap<i64, (Vec<GroupMember>, Vec<String>)> {
    // Members compare by id: the representation a change was computed from decorates
    // members (type, $ref), and a writer must never re-add someone because of that.
    let old: HashSet<&str> = before.iter().map(|m| m.value.as_str()).collect();
    let new: HashSet<&str> = after.iter().map(|m| m.value.as_str()).collect();
    let mut deltas: BTreeMap<i64, (Vec<GroupMember>, Vec<String>)> = BTreeMap::new();
    for member in after {
        if !old.contains(member.value.as_str()) {
            deltas
                .entry(compute_shard_of(&member.value, count))
                .or_default()
                .0
                .push(member.clone());
        }
    }
    for id in old.iter().filter(|id| !new.contains(*id)) {
        deltas
            .entry(compute_shard_of(id, count))
            .or_default()
            .1
            .push((*id).to_string());
    }
    deltas
}

/// Applies a delta to a shard's members: removals, then additions replacing equal ids.
pub fn apply_delta(members: &mut Vec<GroupMember>, added: &[GroupMember], removed: &[String]) {
    let gone: HashSet<&str> = removed
        .iter()
        .map(String::as_str)
        .chain(added.iter().map(|m| m.value.as_str()))
        .collect();
    members.retain(|m| !gone.contains(m.value.as_str()));
    members.extend(added.iter().cloned());
}

/// The shards of each group, by tenant and group id, then by shard index.
type ShardsByGroup = HashMap<(String, String), BTreeMap<i64, Arc<ScimGroupMembers>>>;

/// The shards seen so far.
#[derive(Debug, Default)]
pub struct ShardCache {
    shards: RwLock<ShardsByGroup>,
}

impl ShardCache {
    /// Records a shard as created or updated.
    pub fn upsert(&self, shard: ScimGroupMembers) {
        let key = (
            shard.namespace().unwrap_or_default(),
            shard.spec.group_id.clone(),
        );
        let mut shards = self.shards.write().unwrap_or_else(|e| e.into_inner());
        shards
            .entry(key)
            .or_default()
            .insert(shard.spec.shard, Arc::new(shard));
    }

    /// Records a shard as deleted.
    pub fn remove(&self, shard: &ScimGroupMembers) {
        let key = (
            shard.namespace().unwrap_or_default(),
            shard.spec.group_id.clone(),
        );
        let mut shards = self.shards.write().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = shards.get_mut(&key) {
            group.remove(&shard.spec.shard);
            if group.is_empty() {
                shards.remove(&key);
            }
        }
    }

    /// Replaces everything after a relist.
    pub fn replace_all(&self, all: Vec<ScimGroupMembers>) {
        let mut fresh = ShardsByGroup::new();
        for shard in all {
            let key = (
                shard.namespace().unwrap_or_default(),
                shard.spec.group_id.clone(),
            );
            fresh
                .entry(key)
                .or_default()
                .insert(shard.spec.shard, Arc::new(shard));
        }
        *self.shards.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// The group with its members filled in from its shards, when it keeps them there.
    pub fn merge(&self, mut group: ScimGroup) -> ScimGroup {
        let Some(count) = group.spec.member_shards else {
            return group;
        };
        let key = (group.namespace().unwrap_or_default(), group.spec.id.clone());
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        group.spec.members = shards
            .get(&key)
            .into_iter()
            .flat_map(|s| s.range(0..count))
            .flat_map(|(_, shard)| shard.spec.members.iter().cloned())
            .collect();
        group
    }
}

/// Groups with their members filled in from `shards`, for readers that keep their own
/// caches of both (the controller, the platform sync, `render`).
pub fn merge_groups<G: Borrow<ScimGroup>, S: Borrow<ScimGroupMembers>>(
    groups: &[G],
    shards: &[S],
) -> Vec<ScimGroup> {
    let cache = ShardCache::default();
    if groups
        .iter()
        .any(|g| g.borrow().spec.member_shards.is_some())
    {
        cache.replace_all(shards.iter().map(|s| s.borrow().clone()).collect());
    }
    groups
        .iter()
        .map(|g| cache.merge(g.borrow().clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> GroupMember {
        GroupMember {
            value: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn small_groups_stay_inline_and_large_ones_get_power_of_two_shards() {
        assert_eq!(compute_shard_count(1000, None), None);
        assert_eq!(compute_shard_count(1001, None), Some(4));
        assert_eq!(compute_shard_count(50_000, None), Some(128));
        // Growth within a factor of four keeps the layout.
        assert_eq!(compute_shard_count(60_000, Some(128)), Some(128));
        assert_eq!(compute_shard_count(300_000, Some(128)), Some(1024));
    }

    #[test]
    fn adding_one_member_touches_one_shard() {
        let before: Vec<GroupMember> = (0..5000).map(|i| member(&format!("u{i}"))).collect();
        let mut after = before.clone();
        after.push(member("new"));
        let deltas = build_deltas(&before, &after, 16);
        assert_eq!(deltas.len(), 1);
        let (shard, (added, removed)) = deltas.into_iter().next().unwrap();
        assert_eq!(shard, compute_shard_of("new", 16));
        assert_eq!((added, removed), (vec![member("new")], vec![]));
    }

    #[test]
    fn a_layout_and_its_merge_hold_every_member_once() {
        let members: Vec<GroupMember> = (0..3000).map(|i| member(&format!("u{i}"))).collect();
        let layout = build_layout(&members, 8);
        assert_eq!(layout.len(), 8);
        assert_eq!(layout.values().map(Vec::len).sum::<usize>(), 3000);
        let cache = ShardCache::default();
        for (i, part) in &layout {
            let mut shard = ScimGroupMembers::new(
                &shard_name("g", *i),
                crate::resources::ScimGroupMembersSpec {
                    group_id: "g".into(),
                    shard: *i,
                    members: part.clone(),
                },
            );
            shard.metadata.namespace = Some("t".into());
            cache.upsert(shard);
        }
        let mut group = ScimGroup::new("g-x", crate::resources::ScimGroupSpec::default());
        group.metadata.namespace = Some("t".into());
        group.spec.id = "g".into();
        group.spec.member_shards = Some(8);
        let merged = cache.merge(group);
        let mut ids: Vec<&str> = merged
            .spec
            .members
            .iter()
            .map(|m| m.value.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3000);
    }

    #[test]
    fn a_delta_replaces_and_removes_by_id() {
        let mut members = vec![member("a"), member("b")];
        let mut b2 = member("b");
        b2.display = Some("Bee".into());
        apply_delta(&mut members, &[b2.clone(), member("c")], &["a".to_string()]);
        assert_eq!(members, vec![b2, member("c")]);
    }
}
