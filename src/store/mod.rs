//! The store: ScimUsers and ScimGroups kept durably by a backend (the Kubernetes API, or a
//! folder of YAML files for the local mode) and read from an in-memory index.

pub mod embedded;
pub mod index;
pub mod kind;
pub mod kube;

use std::sync::Arc;

use crate::resources::{ScimGroup, ScimUser};
use index::Index;
use kind::ScimKind;

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

    /// Deletes an object if its uid and resourceVersion are current.
    pub async fn delete<K: ScimKind>(&self, obj: &K) -> Result<(), StoreError> {
        match self {
            Backend::Kube(b) => b.delete(obj).await,
            Backend::Embedded(b) => b.delete(obj).await,
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
    /// Groups by tenant.
    pub groups: Arc<Index<ScimGroup>>,
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
        let created = self.backend.create(obj).await?;
        self.index().upsert(created.clone());
        Ok(created)
    }

    /// Replaces an object and records it in the index.
    pub async fn replace<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError>
    where
        Self: IndexOf<K>,
    {
        let replaced = self.backend.replace(obj).await?;
        self.index().upsert(replaced.clone());
        Ok(replaced)
    }

    /// Deletes an object and removes it from the index.
    pub async fn delete<K: ScimKind>(&self, obj: &K) -> Result<(), StoreError>
    where
        Self: IndexOf<K>,
    {
        match self.backend.delete(obj).await {
            Ok(()) | Err(StoreError::NotFound) => {
                self.index().remove(obj);
                Ok(())
            }
            Err(e) => Err(e),
        }
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
        let found = self.backend.get_live::<K>(namespace, name).await?;
        if let Some(obj) = &found {
            self.index().upsert(obj.clone());
        }
        Ok(found)
    }
}
