//! The store: ScimUsers and ScimGroups kept durably by a backend (the Kubernetes API, or a
//! folder of YAML files for the local mode) and read from an in-memory index.

pub mod embedded;
pub mod index;
pub mod kind;
pub mod kube;
pub mod shards;

use std::any::Any;
use std::sync::Arc;

use crate::resources::{ScimGroup, ScimUser};
use index::Index;
use kind::ScimKind;
use shards::ShardCache;

/// Field manager of every write the store makes.
pub const FIELD_MANAGER: &str = "scim-operator";

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An object with that name exists.
    #[error("an object with that name already exists")]
    AlreadyExists,
    /// The object changed since it was read.
    #[error("the object changed since it was read")]
    Conflict,
    /// The object does not exist.
    #[error("the object does not exist")]
    NotFound,
    /// The backend refused the object as invalid.
    #[error("the object was refused: {0}")]
    Invalid(String),
    /// The backend cannot be reached or failed.
    #[error("failed to reach the backend: {0}")]
    Unavailable(String),
}

/// Where objects are kept.
pub enum Backend {
    /// The Kubernetes API.
    Kube(kube::KubeBackend),
    /// A folder of YAML files.
    Embedded(embedded::EmbeddedBackend),
}

impl Backend {
    /// Creates an object; fails with `AlreadyExists` when its name is taken.
    pub async fn create<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError> {
        match self {
            Backend::Kube(b) => b.create(obj).await,
            Backend::Embedded(b) => b.create(obj).await,
        }
    }

    /// Replaces an object if its resourceVersion is current; fails with `Conflict` if not.
    pub async fn replace<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError> {
        match self {
            Backend::Kube(b) => b.replace(obj).await,
            Backend::Embedded(b) => b.replace(obj).await,
        }
    }

    /// Deletes an object if its uid is current (and, with `exact`, its resourceVersion).
    pub async fn delete<K: ScimKind>(&self, obj: &K, exact: bool) -> Result<(), StoreError> {
        match self {
            Backend::Kube(b) => b.delete(obj, exact).await,
            Backend::Embedded(b) => b.delete(obj, exact).await,
        }
    }

    /// Reads an object from the backend itself, bypassing the index.
    pub async fn get_live<K: ScimKind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        match self {
            Backend::Kube(b) => b.get_live(namespace, name).await,
            Backend::Embedded(b) => b.get_live(namespace, name).await,
        }
    }
}

/// The backend and the indexes of both kinds.
pub struct Store {
    /// Durable storage.
    pub backend: Backend,
    /// Users by tenant.
    pub users: Arc<Index<ScimUser>>,
    /// Groups by tenant, with their members merged in from shards.
    pub groups: Arc<Index<ScimGroup>>,
    /// Member shards of large groups (Kubernetes backend only).
    pub shards: Arc<ShardCache>,
}

/// The object as a group, when it is one.
fn as_group<K: ScimKind>(obj: &K) -> Option<&ScimGroup> {
    (obj as &dyn Any).downcast_ref::<ScimGroup>()
}

/// A group as the generic kind it was asked for.
fn from_group<K: ScimKind>(group: ScimGroup) -> Option<K> {
    (Box::new(group) as Box<dyn Any>)
        .downcast::<K>()
        .ok()
        .map(|b| *b)
}

/// Access to the index of a kind.
pub trait IndexOf<K> {
    /// The index of kind `K`.
    fn index(&self) -> &Index<K>;
}

impl IndexOf<ScimUser> for Store {
    fn index(&self) -> &Index<ScimUser> {
        &self.users
    }
}

impl IndexOf<ScimGroup> for Store {
    fn index(&self) -> &Index<ScimGroup> {
        &self.groups
    }
}

impl Store {
    /// Creates an object and records it in the index.
    pub async fn create<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError>
    where
        Self: IndexOf<K>,
    {
        if let (Backend::Kube(kube), Some(group)) = (&self.backend, as_group(obj)) {
            let created = kube.create_group(group, &self.shards).await?;
            self.groups.upsert(created.clone());
            return from_group(created).ok_or(StoreError::Invalid("not a group".into()));
        }
        let created = self.backend.create(obj).await?;
        self.index().upsert(created.clone());
        Ok(created)
    }

    /// Replaces an object and records it in the index; a group's member changes are taken
    /// against what the index holds.
    pub async fn replace<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError>
    where
        Self: IndexOf<K>,
    {
        let previous = self.index().read().tenant_object(obj);
        self.replace_from(previous.as_deref(), obj).await
    }

    /// Replaces an object that was computed from `previous`, and records it in the index.
    /// For a group kept in shards, only the members that differ between `previous` and
    /// `next` are written, so a concurrent writer's members are never undone by a stale
    /// copy.
    pub async fn replace_from<K: ScimKind>(
        &self,
        previous: Option<&K>,
        next: &K,
    ) -> Result<K, StoreError>
    where
        Self: IndexOf<K>,
    {
        if let (Backend::Kube(kube), Some(group)) = (&self.backend, as_group(next)) {
            let previous = previous.and_then(as_group);
            let replaced = kube.replace_group(group, previous, &self.shards).await?;
            self.groups.upsert(replaced.clone());
            return from_group(replaced).ok_or(StoreError::Invalid("not a group".into()));
        }
        let replaced = self.backend.replace(next).await?;
        self.index().upsert(replaced.clone());
        Ok(replaced)
    }

    /// Deletes an object (gone already counts as done) and removes it from the index.
    pub async fn delete<K: ScimKind>(&self, obj: &K) -> Result<(), StoreError>
    where
        Self: IndexOf<K>,
    {
        self.delete_with(obj, false).await
    }

    /// Deletes an object only if it is still the version given; otherwise `Conflict` (or
    /// `NotFound`), so a caller that read it can tell that someone else got there first.
    pub async fn delete_exact<K: ScimKind>(&self, obj: &K) -> Result<(), StoreError>
    where
        Self: IndexOf<K>,
    {
        self.delete_with(obj, true).await
    }

    async fn delete_with<K: ScimKind>(&self, obj: &K, exact: bool) -> Result<(), StoreError>
    where
        Self: IndexOf<K>,
    {
        match self.backend.delete(obj, exact).await {
            Ok(()) => self.index().remove(obj),
            Err(StoreError::NotFound) if !exact => self.index().remove(obj),
            Err(e) => return Err(e),
        }
        // A rename creates the new object before deleting the old one; the shards, keyed by
        // id, then belong to the new object and stay.
        if let (Backend::Kube(kube), Some(group)) = (&self.backend, as_group(obj)) {
            let still_used = {
                let read = self.groups.read();
                let namespace = ::kube::ResourceExt::namespace(group).unwrap_or_default();
                read.tenant(&namespace)
                    .and_then(|t| t.get_by_id(&group.spec.id))
                    .is_some()
            };
            if !still_used {
                kube.delete_shards(group).await?;
            }
        }
        Ok(())
    }

    /// Reads an object from the backend and refreshes the index with it.
    pub async fn get_live<K: ScimKind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError>
    where
        Self: IndexOf<K>,
    {
        let mut found = self.backend.get_live::<K>(namespace, name).await?;
        if let Some(group) = found.as_ref().and_then(as_group) {
            found = from_group(self.shards.merge(group.clone()));
        }
        if let Some(obj) = &found {
            self.index().upsert(obj.clone());
        }
        Ok(found)
    }
}
