//! The in-memory index of one resource kind, per tenant: answers reads and the common
//! lookups (by id, unique name, externalId, member) without scanning or a round trip.
//!
//! The index is fed by the backend's watch and by the store's own writes (so a client reads
//! what it just wrote). Stale updates never win: an update older than what the index holds
//! is ignored, and an object the store deleted is not brought back by a late event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use tokio::sync::watch;

use super::kind::ScimKind;

/// How long a deleted object's uid is remembered, to ignore late events about it.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// The objects of one tenant and their lookups.
// TODO: keep a compact record instead of the whole Kubernetes object, and intern the lookup
// keys; at 100,000 users and 10,000 groups the index holds about 450 MiB (BENCHMARKS.md),
// above the 300 MB this design aims for.
#[derive(Debug)]
pub struct TenantIndex<K> {
    by_name: HashMap<String, Arc<K>>,
    by_id: BTreeMap<String, String>,
    by_unique: HashMap<String, String>,
    by_external: HashMap<String, BTreeSet<String>>,
    by_member: HashMap<String, BTreeSet<String>>,
}

impl<K> Default for TenantIndex<K> {
    fn default() -> Self {
        Self {
            by_name: HashMap::new(),
            by_id: BTreeMap::new(),
            by_unique: HashMap::new(),
            by_external: HashMap::new(),
            by_member: HashMap::new(),
        }
    }
}

impl<K: ScimKind> TenantIndex<K> {
    /// The object with a SCIM id.
    pub fn get_by_id(&self, id: &str) -> Option<&Arc<K>> {
        self.by_id.get(id).and_then(|name| self.by_name.get(name))
    }

    /// The object whose unique attribute equals `value` without regard to case.
    pub fn get_by_unique(&self, value: &str) -> Option<&Arc<K>> {
        self.by_unique
            .get(&value.to_lowercase())
            .and_then(|name| self.by_name.get(name))
    }

    /// The objects with an externalId, in id order.
    pub fn find_by_external_id(&self, external_id: &str) -> Vec<&Arc<K>> {
        let mut found: Vec<&Arc<K>> = self
            .by_external
            .get(external_id)
            .into_iter()
            .flatten()
            .filter_map(|name| self.by_name.get(name))
            .collect();
        found.sort_by(|a, b| a.scim_id().cmp(b.scim_id()));
        found
    }

    /// The objects that list `member_id` as a member, in id order.
    pub fn find_by_member(&self, member_id: &str) -> Vec<&Arc<K>> {
        let mut found: Vec<&Arc<K>> = self
            .by_member
            .get(member_id)
            .into_iter()
            .flatten()
            .filter_map(|name| self.by_name.get(name))
            .collect();
        found.sort_by(|a, b| a.scim_id().cmp(b.scim_id()));
        found
    }

    /// Every object, in id order (the stable order of unsorted lists).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<K>> {
        self.by_id
            .values()
            .filter_map(|name| self.by_name.get(name))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the tenant holds no objects.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn insert(&mut self, obj: Arc<K>) {
        let name = obj.name_any();
        self.remove_name(&name);
        self.by_id.insert(obj.scim_id().to_string(), name.clone());
        self.by_unique
            .insert(obj.unique_value().to_lowercase(), name.clone());
        if let Some(external) = obj.external_id() {
            self.by_external
                .entry(external.to_string())
                .or_default()
                .insert(name.clone());
        }
        for member in obj.member_ids() {
            self.by_member
                .entry(member.to_string())
                .or_default()
                .insert(name.clone());
        }
        self.by_name.insert(name, obj);
    }

    fn remove_name(&mut self, name: &str) -> Option<Arc<K>> {
        let old = self.by_name.remove(name)?;
        if self.by_id.get(old.scim_id()).is_some_and(|n| n == name) {
            self.by_id.remove(old.scim_id());
        }
        let unique = old.unique_value().to_lowercase();
        if self.by_unique.get(&unique).is_some_and(|n| n == name) {
            self.by_unique.remove(&unique);
        }
        if let Some(external) = old.external_id() {
            remove_from_set(&mut self.by_external, external, name);
        }
        for member in old.member_ids() {
            remove_from_set(&mut self.by_member, member, name);
        }
        // A rename briefly leaves two objects with one id; keep the id pointing at the other.
        if !self.by_id.contains_key(old.scim_id())
            && let Some((other, _)) = self
                .by_name
                .iter()
                .find(|(_, o)| o.scim_id() == old.scim_id())
        {
            self.by_id.insert(old.scim_id().to_string(), other.clone());
        }
        Some(old)
    }
}

fn remove_from_set(map: &mut HashMap<String, BTreeSet<String>>, key: &str, name: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(name);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// The index of one kind across tenants, with a change counter for watchers.
#[derive(Debug)]
pub struct Index<K> {
    tenants: RwLock<HashMap<String, TenantIndex<K>>>,
    tombstones: RwLock<HashMap<String, Instant>>,
    changes: watch::Sender<u64>,
}

impl<K> Default for Index<K> {
    fn default() -> Self {
        Self {
            tenants: RwLock::new(HashMap::new()),
            tombstones: RwLock::new(HashMap::new()),
            changes: watch::channel(0).0,
        }
    }
}

/// A read view of the index.
pub struct IndexRead<'a, K>(RwLockReadGuard<'a, HashMap<String, TenantIndex<K>>>);

impl<K: ScimKind> IndexRead<'_, K> {
    /// The objects of one tenant, if it holds any.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantIndex<K>> {
        self.0.get(tenant)
    }

    /// The indexed object with the same namespace and name as `obj`.
    pub fn tenant_object(&self, obj: &K) -> Option<Arc<K>> {
        self.0
            .get(&obj.namespace().unwrap_or_default())?
            .by_name
            .get(&obj.name_any())
            .cloned()
    }
}

impl<K: ScimKind> Index<K> {
    /// A consistent read view.
    pub fn read(&self) -> IndexRead<'_, K> {
        IndexRead(self.tenants.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, TenantIndex<K>>> {
        self.tenants.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records an object as created or updated, unless the index holds a newer version or
    /// the object was deleted.
    pub fn upsert(&self, obj: K) {
        let uid = obj.uid().unwrap_or_default();
        if self
            .tombstones
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&uid)
        {
            return;
        }
        let tenant = obj.namespace().unwrap_or_default();
        let mut tenants = self.write();
        let index = tenants.entry(tenant).or_default();
        // An event about a version the index already holds carries nothing new (and, for a
        // group kept in shards, may hold fewer members than the store's own write recorded).
        if let Some(current) = index.by_name.get(&obj.name_any())
            && current.uid() == obj.uid()
            && holds_at_least(
                current.resource_version().as_deref(),
                obj.resource_version().as_deref(),
            )
        {
            return;
        }
        index.insert(Arc::new(obj));
        drop(tenants);
        self.changes.send_modify(|v| *v += 1);
    }

    /// Records an object even when the index holds the same version: for a group whose
    /// member shards changed while the group object did not.
    pub fn upsert_same_version(&self, obj: K) {
        let tenant = obj.namespace().unwrap_or_default();
        let mut tenants = self.write();
        let index = tenants.entry(tenant).or_default();
        let holds_same = index.by_name.get(&obj.name_any()).is_some_and(|current| {
            current.uid() == obj.uid() && current.resource_version() == obj.resource_version()
        });
        if !holds_same {
            return;
        }
        index.insert(Arc::new(obj));
        drop(tenants);
        self.changes.send_modify(|v| *v += 1);
    }

    /// Records an object as deleted.
    pub fn remove(&self, obj: &K) {
        let uid = obj.uid().unwrap_or_default();
        {
            let mut tombstones = self.tombstones.write().unwrap_or_else(|e| e.into_inner());
            tombstones.retain(|_, at| at.elapsed() < TOMBSTONE_TTL);
            tombstones.insert(uid, Instant::now());
        }
        let tenant = obj.namespace().unwrap_or_default();
        let mut tenants = self.write();
        if let Some(index) = tenants.get_mut(&tenant) {
            let name = obj.name_any();
            if index
                .by_name
                .get(&name)
                .is_some_and(|cur| cur.uid() == obj.uid())
            {
                index.remove_name(&name);
            }
        }
        drop(tenants);
        self.changes.send_modify(|v| *v += 1);
    }

    /// Replaces everything with a fresh listing (after a watch restarts).
    pub fn replace_all(&self, objs: Vec<K>) {
        let mut fresh: HashMap<String, TenantIndex<K>> = HashMap::new();
        let tombstones = self.tombstones.read().unwrap_or_else(|e| e.into_inner());
        for obj in objs {
            if tombstones.contains_key(&obj.uid().unwrap_or_default()) {
                continue;
            }
            fresh
                .entry(obj.namespace().unwrap_or_default())
                .or_default()
                .insert(Arc::new(obj));
        }
        drop(tombstones);
        *self.write() = fresh;
        self.changes.send_modify(|v| *v += 1);
    }
}

/// Whether `current` is as new as `incoming` or newer. Resource versions are opaque, but
/// where both are numbers (as with etcd) their order is the order of writes.
fn holds_at_least(current: Option<&str>, incoming: Option<&str>) -> bool {
    match (
        current.and_then(|v| v.parse::<u64>().ok()),
        incoming.and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(c), Some(i)) => c >= i,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ScimUser, ScimUserSpec};
    use crate::store::kind::new_object;

    fn user(name: &str, id: &str, rv: &str, uid: &str) -> ScimUser {
        let spec = ScimUserSpec {
            id: id.into(),
            user_name: name.into(),
            active: Some(true),
            ..Default::default()
        };
        let mut obj: ScimUser = new_object("t", spec, id, "c", "m");
        obj.metadata.resource_version = Some(rv.into());
        obj.metadata.uid = Some(uid.into());
        obj
    }

    #[test]
    fn lookups_ignore_case_of_the_unique_name() {
        let index = Index::default();
        index.upsert(user("Ann@Example.com", "1", "5", "u1"));
        let read = index.read();
        let tenant = read.tenant("t").unwrap();
        assert_eq!(
            tenant.get_by_unique("ann@example.COM").unwrap().scim_id(),
            "1"
        );
        assert_eq!(
            tenant.get_by_id("1").unwrap().spec.user_name,
            "Ann@Example.com"
        );
    }

    #[test]
    fn an_older_version_does_not_replace_a_newer_one() {
        let index = Index::default();
        let mut newer = user("a", "1", "7", "u1");
        newer.spec.active = Some(false);
        index.upsert(newer);
        index.upsert(user("a", "1", "6", "u1"));
        let read = index.read();
        assert!(
            !read
                .tenant("t")
                .unwrap()
                .get_by_id("1")
                .unwrap()
                .spec
                .is_active()
        );
    }

    #[test]
    fn a_deleted_object_is_not_revived_by_a_late_event() {
        let index = Index::default();
        let obj = user("a", "1", "5", "u1");
        index.upsert(obj.clone());
        index.remove(&obj);
        index.upsert(user("a", "1", "6", "u1"));
        assert!(index.read().tenant("t").unwrap().get_by_id("1").is_none());
    }

    #[test]
    fn a_late_delete_does_not_remove_a_recreated_object() {
        let index = Index::default();
        let old = user("a", "1", "5", "u1");
        index.upsert(user("a", "2", "9", "u2"));
        index.remove(&old);
        assert_eq!(
            index
                .read()
                .tenant("t")
                .unwrap()
                .get_by_unique("a")
                .unwrap()
                .scim_id(),
            "2"
        );
    }
}
